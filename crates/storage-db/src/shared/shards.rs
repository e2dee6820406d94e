//! The shards of syncs split by folder (`ShardQueue`, table
//! `listing_shards`). A claim is one `UPDATE` of the first claimable row
//! (PostgreSQL skips rows another claim holds locked); every report is a
//! compare-and-set on the claim number (`attempts`), so a worker whose
//! shard was claimed again writes nothing.
//!
//! This file is compiled twice, as a child module of each engine:
//! `sqlite::shards` and `postgres::shards` (the `#[path]` module
//! declarations at the end of `src/sqlite.rs` and `src/postgres.rs`). So
//! `super` is the engine module, and the `use super::{...}` lines below
//! name everything this file takes from it; every other name is an
//! ordinary import.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use storage_core::shards::{Shard, ShardQueue, ShardReport, ShardStatus};
use storage_core::{Error, Result, SyncStatus};

use super::rows::{db, get};
use crate::shape::to_text;

// From the engine module: the engine, its row type, how it binds and reads
// a time, and the clause that skips rows other claims hold.
use super::{read_time, stamp, DbRow, Engine, SKIP_LOCKED};

const SHARD_COLUMNS: &str = "id, storage_id, job, folder, status, attempts, lease_until, report";

fn shard_from_row(row: &DbRow) -> Result<Shard> {
    let id: i64 = get(row, "id")?;
    let status: String = get(row, "status")?;
    let report: String = get(row, "report")?;
    Ok(Shard {
        id,
        storage_id: get(row, "storage_id")?,
        job: get(row, "job")?,
        folder: get(row, "folder")?,
        status: ShardStatus::parse(&status).ok_or_else(|| {
            Error::backend(
                format!("reading shard {id}"),
                format!("unknown status {status:?}"),
            )
        })?,
        attempts: get(row, "attempts")?,
        lease_until: read_time(row, "lease_until", || format!("the lease of shard {id}"))?,
        report: serde_json::from_str(&report)
            .map_err(|err| Error::backend(format!("reading the report of shard {id}"), err))?,
    })
}

#[async_trait]
impl ShardQueue for Engine {
    async fn insert_shards(&self, storage: i64, job: &str, folders: &[String]) -> Result<()> {
        let context = format!("saving the shards of the sync of storage {storage}");
        let mut tx = self.begin_write(&context).await?;
        sqlx::query("DELETE FROM listing_shards WHERE storage_id = $1 AND job <> $2")
            .bind(storage)
            .bind(job)
            .execute(&mut *tx)
            .await
            .map_err(db(&context))?;
        for folder in folders {
            sqlx::query(
                "INSERT INTO listing_shards (storage_id, job, folder, status)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(storage)
            .bind(job)
            .bind(folder)
            .bind(ShardStatus::Pending.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db(&context))?;
        }
        tx.commit().await.map_err(db(context))
    }

    async fn job_shards(&self, storage: i64, job: &str) -> Result<Vec<Shard>> {
        let sql = format!(
            "SELECT {SHARD_COLUMNS} FROM listing_shards
             WHERE storage_id = $1 AND job = $2 ORDER BY id"
        );
        sqlx::query(&sql)
            .bind(storage)
            .bind(job)
            .fetch_all(&self.pool)
            .await
            .map_err(db(format!(
                "reading the shards of the sync of storage {storage}"
            )))?
            .iter()
            .map(shard_from_row)
            .collect()
    }

    async fn claim_shard(
        &self,
        job: Option<(i64, &str)>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Shard>> {
        // Pending, or running under a lease that ran out; of a job its
        // storage still runs.
        let claimable = "(sh.status = $1 OR (sh.status = $2 AND sh.lease_until < $3))
             AND s.status = $4 AND s.last_sync_job = sh.job";
        // Only the shards of one job, its two parameters numbered from
        // `first`.
        let of_job = |first: usize| match job {
            Some(_) => format!(" AND sh.storage_id = ${first} AND sh.job = ${}", first + 1),
            None => String::new(),
        };
        // Idle workers of every instance ask often: a read first keeps them
        // from taking SQLite's write lock (or row locks) for nothing.
        let probe = format!(
            "SELECT 1 FROM listing_shards sh JOIN storages s ON s.id = sh.storage_id
             WHERE {claimable}{} LIMIT 1",
            of_job(5)
        );
        let mut query = sqlx::query(&probe)
            .bind(ShardStatus::Pending.as_str())
            .bind(ShardStatus::Running.as_str())
            .bind(stamp(now))
            .bind(SyncStatus::InProgress.as_str());
        if let Some((storage, job)) = job {
            query = query.bind(storage).bind(job);
        }
        let context = "claiming a shard of a sync";
        if query
            .fetch_optional(&self.pool)
            .await
            .map_err(db(context))?
            .is_none()
        {
            return Ok(None);
        }
        let sql = format!(
            "UPDATE listing_shards SET status = $2, attempts = attempts + 1, lease_until = $5
             WHERE id = (
                 SELECT sh.id FROM listing_shards sh JOIN storages s ON s.id = sh.storage_id
                 WHERE {claimable}{}
                 ORDER BY sh.id LIMIT 1{SKIP_LOCKED})
             RETURNING {SHARD_COLUMNS}",
            of_job(6)
        );
        let mut query = sqlx::query(&sql)
            .bind(ShardStatus::Pending.as_str())
            .bind(ShardStatus::Running.as_str())
            .bind(stamp(now))
            .bind(SyncStatus::InProgress.as_str())
            .bind(stamp(lease_until));
        if let Some((storage, job)) = job {
            query = query.bind(storage).bind(job);
        }
        query
            .fetch_optional(&self.pool)
            .await
            .map_err(db(context))?
            .as_ref()
            .map(shard_from_row)
            .transpose()
    }

    async fn report_shard(
        &self,
        shard: &Shard,
        status: ShardStatus,
        report: &ShardReport,
        lease_until: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE listing_shards SET status = $1, report = $2, lease_until = $3
             WHERE id = $4 AND attempts = $5 AND status = $6
               AND EXISTS (SELECT 1 FROM storages s
                           WHERE s.id = listing_shards.storage_id
                             AND s.last_sync_job = listing_shards.job
                             AND s.status IN ($7, $8))",
        )
        .bind(status.as_str())
        .bind(to_text(report))
        .bind(lease_until.map(stamp))
        .bind(shard.id)
        .bind(shard.attempts)
        .bind(ShardStatus::Running.as_str())
        // A job queued again after its worker died keeps its shards.
        .bind(SyncStatus::InProgress.as_str())
        .bind(SyncStatus::Queued.as_str())
        .execute(&self.pool)
        .await
        .map_err(db(format!("recording the progress of shard {}", shard.id)))?;
        Ok(done.rows_affected() == 1)
    }

    async fn remove_shards(&self, storage: i64, job: &str) -> Result<()> {
        sqlx::query("DELETE FROM listing_shards WHERE storage_id = $1 AND job = $2")
            .bind(storage)
            .bind(job)
            .execute(&self.pool)
            .await
            .map_err(db(format!(
                "removing the shards of the sync of storage {storage}"
            )))?;
        Ok(())
    }
}
