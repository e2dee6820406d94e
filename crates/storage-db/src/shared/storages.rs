//! Storages and their sync state (`StorageRepository`). Claims differ per
//! engine (`claim_next` in the engine module); every sync state is written
//! through `write_sync`, one compare-and-set.
//!
//! This file is compiled twice, as a child module of each engine:
//! `sqlite::storages` and `postgres::storages` (the `#[path]` module declarations
//! at the end of `src/sqlite.rs` and `src/postgres.rs`). So `super` is the
//! engine module, and the `use super::{...}` lines below name everything
//! this file takes from it; every other name is an ordinary import.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use storage_core::persist::{StorageFilter, StorageRepository, SyncGuard};
use storage_core::webhooks::{recorded, Action};
use storage_core::{Error, NewStorage, Result, Storage, SyncState, SyncStatus};

use super::rows::{db, db_error, storage_from_row};
use crate::shape::{now, to_text};
use crate::sql::{foreign_key_violation, missing_project, STORAGE_COLUMNS};

// From the engine module: the engine, its database and connection types,
// how it binds a time and a list.
use super::{push_list, stamp, Db, DbConn, Engine, LIST_CHUNK};

impl Engine {
    /// Writes `state` if the stored state still matches `expected`.
    pub(super) async fn write_sync(
        conn: &mut DbConn,
        id: i64,
        expected: &SyncGuard,
        state: &SyncState,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE storages SET status = $1, last_sync = $2, last_sync_count = $3,
                                 last_sync_job = $4, traceback = $5, meta = $6, lease_until = $7
             WHERE id = $8 AND status = $9 AND last_sync_job IS NOT DISTINCT FROM $10",
        )
        .bind(state.status.as_str())
        .bind(state.last_sync.map(stamp))
        .bind(state.last_sync_count)
        .bind(&state.last_sync_job)
        .bind(&state.traceback)
        .bind(to_text(&state.meta))
        .bind(state.lease_until.map(stamp))
        .bind(id)
        .bind(expected.status.as_str())
        .bind(&expected.job)
        .execute(&mut *conn)
        .await
        .map_err(db(format!("updating the sync state of storage {id}")))?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(action) = Action::of_sync_move(expected.status, state.status) {
            let context = format!("announcing the sync of storage {id}");
            let (storage_type, kind, project): (String, String, i64) =
                sqlx::query_as("SELECT type, kind, project_id FROM storages WHERE id = $1")
                    .bind(id)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db(context))?;
            let payload = recorded::sync(id, &storage_type, &kind, state);
            Self::record_event(conn, project, action, &payload).await?;
        }
        Ok(true)
    }
}

#[async_trait]
impl StorageRepository for Engine {
    async fn insert_storage(&self, new: NewStorage) -> Result<Storage> {
        let created_at = now();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO storages (kind, type, project_id, title, description, created_at,
                                   synchronizable, settings, status, meta)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, '{}') RETURNING id",
        )
        .bind(new.kind.as_str())
        .bind(&new.storage_type)
        .bind(new.project)
        .bind(&new.title)
        .bind(&new.description)
        .bind(stamp(created_at))
        .bind(new.synchronizable)
        .bind(to_text(new.settings.as_map()))
        .bind(SyncStatus::Initialized.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(|err| {
            if foreign_key_violation(&err) {
                missing_project(new.project)
            } else {
                db_error(
                    format!("creating a storage of project {}", new.project),
                    err,
                )
            }
        })?;
        Ok(Storage::new(id, new, created_at))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(db("checking the database"))
    }

    async fn storage(&self, id: i64) -> Result<Option<Storage>> {
        let sql = format!("SELECT {STORAGE_COLUMNS} FROM storages WHERE id = $1");
        sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db(format!("reading storage {id}")))?
            .as_ref()
            .map(storage_from_row)
            .transpose()
    }

    async fn storages(&self, filter: StorageFilter<'_>) -> Result<Vec<Storage>> {
        let mut query = QueryBuilder::<Db>::new(format!(
            "SELECT {STORAGE_COLUMNS} FROM storages WHERE 1 = 1"
        ));
        if let Some(project) = filter.project {
            query.push(" AND project_id = ").push_bind(project);
        }
        if let Some(kind) = filter.kind {
            query.push(" AND kind = ").push_bind(kind.as_str());
        }
        if let Some(storage_type) = filter.storage_type {
            query.push(" AND type = ").push_bind(storage_type);
        }
        query.push(" ORDER BY id");
        query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(db("listing storages"))?
            .iter()
            .map(storage_from_row)
            .collect()
    }

    async fn update_storage(&self, storage: &Storage) -> Result<()> {
        let done = sqlx::query(
            "UPDATE storages SET project_id = $1, title = $2, description = $3,
                                 synchronizable = $4, settings = $5
             WHERE id = $6",
        )
        .bind(storage.project)
        .bind(&storage.title)
        .bind(&storage.description)
        .bind(storage.synchronizable)
        .bind(to_text(storage.settings.as_map()))
        .bind(storage.id)
        .execute(&self.pool)
        .await
        .map_err(|err| {
            if foreign_key_violation(&err) {
                missing_project(storage.project)
            } else {
                db_error(format!("updating storage {}", storage.id), err)
            }
        })?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found(format!("storage {}", storage.id)));
        }
        Ok(())
    }

    async fn delete_storage(&self, id: i64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM storages WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db(format!("deleting storage {id}")))?;
        Ok(done.rows_affected() > 0)
    }

    async fn storages_with_status(&self, statuses: &[SyncStatus]) -> Result<Vec<Storage>> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = QueryBuilder::<Db>::new(format!(
            "SELECT {STORAGE_COLUMNS} FROM storages WHERE status"
        ));
        push_list(
            &mut query,
            statuses.iter().map(|status| status.as_str()).collect(),
        );
        query.push(" ORDER BY id");
        query
            .build()
            .persistent(false)
            .fetch_all(&self.pool)
            .await
            .map_err(db("listing storages by status"))?
            .iter()
            .map(storage_from_row)
            .collect()
    }

    async fn update_sync(&self, id: i64, expected: &SyncGuard, state: &SyncState) -> Result<bool> {
        let context = format!("updating the sync state of storage {id}");
        if Action::of_sync_move(expected.status, state.status).is_none() {
            let mut conn = self.pool.acquire().await.map_err(db(context))?;
            return Self::write_sync(&mut conn, id, expected, state).await;
        }
        // The move and the event it announces commit together.
        let mut tx = self.begin_write(&context).await?;
        let written = Self::write_sync(&mut tx, id, expected, state).await?;
        tx.commit().await.map_err(db(context))?;
        Ok(written)
    }

    async fn claim_queued(
        &self,
        skip: &[i64],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        per_tenant: Option<usize>,
    ) -> Result<Option<Storage>> {
        self.claim_next(skip, now, lease_until, per_tenant).await
    }

    /// The organisation of each storage's project.
    async fn storage_tenants(&self, ids: &[i64]) -> Result<HashMap<i64, i64>> {
        let mut tenants = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(LIST_CHUNK) {
            let mut query = QueryBuilder::<Db>::new(
                "SELECT s.id, p.organization_id FROM storages s
                 JOIN projects p ON p.id = s.project_id WHERE s.id",
            );
            push_list(&mut query, chunk.to_vec());
            let rows: Vec<(i64, i64)> = query
                .build_query_as()
                .persistent(false)
                .fetch_all(&self.pool)
                .await
                .map_err(db("reading the organisations of storages"))?;
            tenants.extend(rows);
        }
        Ok(tenants)
    }
}
