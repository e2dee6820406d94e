//! Storages as Label Studio's storage rows: read from every storage table,
//! sync state written back to the same columns Label Studio's own sync
//! writes (`status`, `last_sync`, `last_sync_count`, `last_sync_job`,
//! `traceback`, `meta`), so its UI shows the sync moving. Storages are
//! created, edited and deleted in Label Studio only.
//!
//! This file is compiled twice, as a child module of each engine
//! (`sqlite::storages`, `postgres::storages`); `super` is the engine.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::QueryBuilder;
use storage_core::persist::{StorageFilter, StorageRepository, SyncGuard};
use storage_core::shards::SHARD_LISTING_FIELD;
use storage_core::{
    meta_time, Error, NewStorage, Result, Settings, Storage, StorageKind, SyncState, SyncStatus,
};

use crate::catalogue::{table_for, table_of, Column, Table, SLOTS, TABLES};
use crate::{LEASE_META, SETTINGS_TABLE};

use super::rows::{get, push_in};
use super::{db, read_time, stamp, Db, DbRow, Engine, JSON_CAST, NULL_SAFE_EQ};

fn managed_by_label_studio(action: &str) -> Error {
    Error::NotSupported {
        what: format!(
            "{action} storages here: on Label Studio's database, storages are created, edited \
             and deleted in Label Studio"
        ),
    }
}

/// The `SELECT` of `table`'s storages, up to its `WHERE`.
fn select(table: &Table) -> QueryBuilder<'static, Db> {
    let mut sql = format!(
        "SELECT CAST(s.{key} AS BIGINT) AS id, CAST(s.project_id AS BIGINT) AS project_id, \
         s.title, s.description, s.created_at, s.synchronizable, s.status, s.last_sync, \
         CAST(s.last_sync_count AS BIGINT) AS last_sync_count, s.last_sync_job, s.traceback, \
         CAST(s.meta AS TEXT) AS meta, x.settings AS x_settings",
        key = table.key
    );
    for field in table.all_fields() {
        let column = table.column(field);
        match field.column {
            Column::Int => sql.push_str(&format!(", CAST({column} AS BIGINT) AS f_{}", field.name)),
            Column::Text | Column::Bool => sql.push_str(&format!(", {column} AS f_{}", field.name)),
        }
    }
    sql.push_str(&format!(
        " FROM {} LEFT JOIN {SETTINGS_TABLE} x ON x.storage_id = s.{} * {SLOTS} + {} WHERE TRUE",
        table.joined(),
        table.key,
        table.slot
    ));
    QueryBuilder::new(sql)
}

fn storage_from_row(table: &Table, row: &DbRow) -> Result<Storage> {
    let id: i64 = get(row, "id")?;
    let what = |column: &str| format!("{column} of {} {id}", table.name);
    let mut settings = Map::new();
    for field in table.all_fields() {
        let column = format!("f_{}", field.name);
        let value = match field.column {
            Column::Text => get::<Option<String>>(row, &column)?.map(Value::from),
            Column::Bool => get::<Option<bool>>(row, &column)?.map(Value::from),
            Column::Int => get::<Option<i64>>(row, &column)?.map(Value::from),
        };
        if let Some(value) = value {
            settings.insert(field.name.to_string(), value);
        }
    }
    // Ours after Label Studio's: a column of its tables always wins.
    if let Some(text) = get::<Option<String>>(row, "x_settings")? {
        if let Ok(Value::Object(ours)) = serde_json::from_str::<Value>(&text) {
            for (name, value) in ours {
                settings.entry(name).or_insert(value);
            }
        }
    }
    let status: String = get(row, "status")?;
    let mut meta = match get::<Option<String>>(row, "meta")? {
        Some(text) => match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => Map::new(),
            Err(err) => return Err(Error::backend(format!("decoding {}", what("meta")), err)),
        },
        None => Map::new(),
    };
    let lease_until = meta
        .remove(LEASE_META)
        .and_then(|v| v.as_str().and_then(crate::parse_label_studio_time));
    Ok(Storage {
        id: table
            .storage_id(id)
            .ok_or_else(|| Error::backend(what("id"), "out of range"))?,
        kind: table.kind,
        storage_type: table.storage_type.to_string(),
        project: get(row, "project_id")?,
        title: get(row, "title")?,
        description: get(row, "description")?,
        created_at: read_time(row, "created_at", || what("created_at"))?
            .ok_or_else(|| Error::backend(what("created_at"), "unexpected NULL"))?,
        synchronizable: get(row, "synchronizable")?,
        settings: Settings::from_map(settings),
        sync: SyncState {
            status: status
                .parse::<SyncStatus>()
                .map_err(|err| Error::backend(format!("decoding {}", what("status")), err))?,
            last_sync: read_time(row, "last_sync", || what("last_sync"))?,
            last_sync_count: get(row, "last_sync_count")?,
            last_sync_job: get(row, "last_sync_job")?,
            traceback: get(row, "traceback")?,
            meta,
            lease_until,
        },
    })
}

impl Engine {
    async fn storages_of(
        &self,
        table: &Table,
        project: Option<i64>,
        statuses: &[SyncStatus],
    ) -> Result<Vec<Storage>> {
        let mut query = select(table);
        if let Some(project) = project {
            query.push(" AND s.project_id = ").push_bind(project);
        }
        if !statuses.is_empty() {
            query.push(" AND s.status");
            push_in(&mut query, statuses.iter().map(|status| status.as_str()));
        }
        let rows = query
            .build()
            .persistent(false)
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading Label Studio's storages"))?;
        rows.iter()
            .map(|row| storage_from_row(table, row))
            .collect()
    }

    /// All storages of the tables `filter` names, in id order.
    async fn storages_matching(
        &self,
        filter: &StorageFilter<'_>,
        statuses: &[SyncStatus],
    ) -> Result<Vec<Storage>> {
        let mut out = Vec::new();
        for table in TABLES.iter().filter(|t| {
            filter.kind.is_none_or(|kind| kind == t.kind)
                && filter.storage_type.is_none_or(|ty| ty == t.storage_type)
        }) {
            out.extend(self.storages_of(table, filter.project, statuses).await?);
        }
        out.sort_by_key(|s| s.id);
        Ok(out)
    }
}

/// `state.meta` as stored: with the lease, which Label Studio has no
/// column for.
fn stored_meta(state: &SyncState) -> String {
    let mut meta = state.meta.clone();
    if let Some(until) = state.lease_until {
        meta.insert(LEASE_META.into(), meta_time(until));
    }
    Value::Object(meta).to_string()
}

#[async_trait]
impl StorageRepository for Engine {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db("pinging Label Studio's database"))?;
        Ok(())
    }

    async fn insert_storage(&self, _new: NewStorage) -> Result<Storage> {
        Err(managed_by_label_studio("creating"))
    }

    async fn storage(&self, id: i64) -> Result<Option<Storage>> {
        let Some((table, label_studio_id)) = table_of(id) else {
            return Ok(None);
        };
        let mut query = select(table);
        query
            .push(format!(" AND s.{} = ", table.key))
            .push_bind(label_studio_id);
        let rows = query
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading a Label Studio storage"))?;
        rows.first()
            .map(|row| storage_from_row(table, row))
            .transpose()
    }

    async fn storages(&self, filter: StorageFilter<'_>) -> Result<Vec<Storage>> {
        self.storages_matching(&filter, &[]).await
    }

    /// Keeps this server's own settings (those Label Studio has no column
    /// for) in our table; a change to anything Label Studio keeps is
    /// refused, naming the field.
    async fn update_storage(&self, storage: &Storage) -> Result<()> {
        let Some((table, _)) = table_of(storage.id) else {
            return Err(Error::not_found(format!("storage {}", storage.id)));
        };
        let current = self
            .storage(storage.id)
            .await?
            .ok_or_else(|| Error::not_found(format!("storage {}", storage.id)))?;
        let label_studio_s = |field: &str| {
            Error::invalid(
                field,
                "Label Studio keeps this field: edit it in Label Studio; this server keeps only \
                 its own settings of Label Studio's storages",
            )
        };
        if storage.title != current.title {
            return Err(label_studio_s("title"));
        }
        if storage.description != current.description {
            return Err(label_studio_s("description"));
        }
        if storage.synchronizable != current.synchronizable {
            return Err(label_studio_s("synchronizable"));
        }
        if storage.project != current.project {
            return Err(label_studio_s("project"));
        }
        let unset = |value: Option<&Value>| value.is_none_or(Value::is_null);
        let mut ours = Map::new();
        for (name, value) in storage.settings.as_map() {
            if table.all_fields().any(|f| f.name == name) {
                let old = current.settings.get(name);
                if old != Some(value) && !(unset(old) && unset(Some(value))) {
                    return Err(label_studio_s(name));
                }
            } else if name == SHARD_LISTING_FIELD && value.as_bool() == Some(true) {
                // Silently syncing in one listing would hide that the
                // setting does nothing here.
                return Err(Error::invalid(
                    SHARD_LISTING_FIELD,
                    "not available on Label Studio's database: a storage there is synced in one \
                     listing (its shards would need a queue of this server's own database)",
                ));
            } else {
                ours.insert(name.clone(), value.clone());
            }
        }
        sqlx::query(&format!(
            "INSERT INTO {SETTINGS_TABLE} (storage_id, settings) VALUES ($1, $2) \
             ON CONFLICT (storage_id) DO UPDATE SET settings = excluded.settings"
        ))
        .bind(storage.id)
        .bind(Value::Object(ours).to_string())
        .execute(&self.pool)
        .await
        .map_err(db(
            "saving this server's settings of a Label Studio storage",
        ))?;
        Ok(())
    }

    async fn delete_storage(&self, _id: i64) -> Result<bool> {
        Err(managed_by_label_studio("deleting"))
    }

    /// Only the storages whose sync this server runs: their `meta` holds
    /// our lease. Label Studio's own syncs (queued or running by its
    /// request or its worker, which reset `meta`) are never claimed, taken
    /// over or failed here.
    async fn storages_with_status(&self, statuses: &[SyncStatus]) -> Result<Vec<Storage>> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let mut storages = self
            .storages_matching(&StorageFilter::default(), statuses)
            .await?;
        storages.retain(|s| s.sync.lease_until.is_some());
        Ok(storages)
    }

    async fn update_sync(&self, id: i64, expected: &SyncGuard, state: &SyncState) -> Result<bool> {
        let Some((table, label_studio_id)) = table_of(id) else {
            return Ok(false);
        };
        let sql = format!(
            "UPDATE {table} SET status = $1, last_sync = $2, last_sync_count = $3, \
             last_sync_job = $4, traceback = $5, meta = $6{JSON_CAST} \
             WHERE {key} = $7 AND status = $8 AND last_sync_job{NULL_SAFE_EQ}$9",
            table = table.name,
            key = table.key,
        );
        let done = sqlx::query(&sql)
            .bind(state.status.as_str())
            .bind(state.last_sync.map(stamp))
            .bind(state.last_sync_count)
            .bind(state.last_sync_job.as_deref())
            .bind(state.traceback.as_deref())
            .bind(stored_meta(state))
            .bind(label_studio_id)
            .bind(expected.status.as_str())
            .bind(expected.job.as_deref())
            .execute(&self.pool)
            .await
            .map_err(db("writing a Label Studio storage's sync state"))?;
        Ok(done.rows_affected() == 1)
    }

    fn route_id(&self, id: i64) -> i64 {
        table_of(id).map_or(id, |(_, label_studio_id)| label_studio_id)
    }

    fn storage_id(&self, kind: StorageKind, storage_type: &str, route_id: i64) -> Option<i64> {
        let table = table_for(kind, storage_type)?;
        table.storage_id(route_id)
    }

    async fn storage_tenants(&self, ids: &[i64]) -> Result<HashMap<i64, i64>> {
        let mut tenants = HashMap::new();
        for &id in ids {
            if let Some(storage) = self.storage(id).await? {
                let organization: Option<i64> = sqlx::query_scalar(
                    "SELECT CAST(organization_id AS BIGINT) FROM project WHERE id = $1",
                )
                .bind(storage.project)
                .fetch_all(&self.pool)
                .await
                .map_err(db("reading a Label Studio project's organization"))?
                .into_iter()
                .next()
                .flatten();
                if let Some(organization) = organization {
                    tenants.insert(id, organization);
                }
            }
        }
        Ok(tenants)
    }
}
