//! What syncs that follow the bucket (`on_object_changed`,
//! `on_object_deleted`) need, on Label Studio's tables: linked objects
//! with the listing entry they were read at, linked keys in byte order,
//! and the removal, refresh and settling of the tasks of gone and changed
//! objects, each call one transaction.
//!
//! Label Studio's link rows keep no listing entry, so ours are kept in
//! [`VERSIONS_TABLE`] beside them. Label Studio deletes a task through its
//! ORM, which removes the rows that point at it; this does the same for
//! the tables that do in the tested schema (a row left behind would fail
//! the foreign key at commit, and the whole removal with it). A task with
//! an annotation or a draft is never deleted: its link is marked
//! `object_exists = false` instead.
//!
//! This file is compiled twice, as a child module of each engine
//! (`sqlite::follow`, `postgres::follow`); `super` is the engine.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::QueryBuilder;
use storage_core::persist::{
    GoneTasks, LinkedObject, NewTask, ObjectLink, Refreshed, Removed, SettledObject,
};
use storage_core::Result;

use crate::catalogue::{Table, TABLES};
use crate::{UNFINISHED_TABLE, VERSIONS_TABLE};

use super::rows::{execute, fetch_all, get, json_column, push_in};
use super::tasks::{import_table, LIST_CHUNK};
use super::webhooks::TaskEvent;
use super::{db, stamp, Db, DbConn, DbRow, Engine, JSON_CAST, KEY_ORDER};

/// Whether a task has work on it that a deletion would lose: an
/// annotation or a draft (the task is `t`).
const HAS_WORK: &str = "(EXISTS (SELECT 1 FROM task_completion a WHERE a.task_id = t.id) \
    OR EXISTS (SELECT 1 FROM tasks_annotationdraft d WHERE d.task_id = t.id))";

/// The tables whose rows point at a task without work, which Label
/// Studio's ORM deletes with it (besides the link tables): `(table,
/// column)`, in an order that deletes what points at a row first.
const TASK_DEPENDENTS: &[(&str, &str)] = &[
    ("tasks_tasklock", "task_id"),
    ("fsm_taskstate", "task_id"),
    ("task_comment_authors", "task_id"),
    ("tasks_failedprediction", "task_id"),
    ("prediction", "task_id"),
];

/// A listing entry's time as we keep it: microseconds since the epoch, the
/// precision links compare at.
fn micros(at: Option<DateTime<Utc>>) -> Option<i64> {
    at.map(|at| at.timestamp_micros())
}

/// A link of a gone or changed object, with what its removal needs.
struct LinkRow {
    link_id: i64,
    task_id: i64,
    project: i64,
    exists: bool,
    has_work: bool,
}

/// Link columns under `l` joined with their task `t`, as [`LinkRow`]
/// reads them.
fn link_row_columns() -> String {
    format!(
        "CAST(l.id AS BIGINT) AS link_id, CAST(l.task_id AS BIGINT) AS task_id, \
         CAST(t.project_id AS BIGINT) AS project_id, l.object_exists AS object_exists, \
         {HAS_WORK} AS has_work"
    )
}

impl LinkRow {
    fn read(row: &DbRow) -> Result<Self> {
        Ok(Self {
            link_id: get(row, "link_id")?,
            task_id: get(row, "task_id")?,
            project: get(row, "project_id")?,
            exists: get(row, "object_exists")?,
            has_work: get(row, "has_work")?,
        })
    }
}

/// An object as a listing showed it when it was read.
#[derive(Debug, Clone, Copy)]
pub(super) struct ListingEntry<'a> {
    pub(super) key: &'a str,
    pub(super) etag: Option<&'a str>,
    pub(super) size: Option<u64>,
    pub(super) last_modified: Option<DateTime<Utc>>,
}

impl<'a> From<&'a ObjectLink> for ListingEntry<'a> {
    fn from(link: &'a ObjectLink) -> Self {
        Self {
            key: &link.key,
            etag: link.etag.as_deref(),
            size: link.size,
            last_modified: link.last_modified,
        }
    }
}

/// Tasks deleted in one removal, by project: their webhooks go out once
/// the transaction has committed.
type DeletedTasks = BTreeMap<i64, Vec<i64>>;

impl Engine {
    /// Records the listing entries (`key`, ETag, size, last-modified time)
    /// of the objects `entries`, the last one given per key: what the next
    /// following sync compares with.
    pub(super) async fn record_listing_entries<'a>(
        conn: &mut DbConn,
        storage_id: i64,
        entries: impl Iterator<Item = ListingEntry<'a>>,
    ) -> Result<()> {
        let entries: BTreeMap<&str, ListingEntry<'a>> =
            entries.map(|entry| (entry.key, entry)).collect();
        let entries: Vec<_> = entries.into_values().collect();
        // Five values a row.
        for chunk in entries.chunks(LIST_CHUNK / 5) {
            let mut query = QueryBuilder::<Db>::new(format!(
                "INSERT INTO {VERSIONS_TABLE} (storage_id, key, etag, size, last_modified) "
            ));
            query.push_values(chunk, |mut row, entry| {
                row.push_bind(storage_id)
                    .push_bind(entry.key)
                    .push_bind(entry.etag)
                    .push_bind(
                        entry
                            .size
                            .map(|size| i64::try_from(size).unwrap_or(i64::MAX)),
                    )
                    .push_bind(micros(entry.last_modified));
            });
            query.push(
                " ON CONFLICT (storage_id, key) DO UPDATE SET etag = excluded.etag, \
                 size = excluded.size, last_modified = excluded.last_modified",
            );
            execute(
                &mut *conn,
                query,
                "recording the listing entries of synced objects",
            )
            .await?;
        }
        Ok(())
    }

    /// Removes the tasks of `links` as `gone` says: deletes those without
    /// work (see [`HAS_WORK`]), marks the others' links.
    async fn remove_link_rows(
        conn: &mut DbConn,
        table: &Table,
        links: Vec<LinkRow>,
        gone: GoneTasks,
        deleted: &mut DeletedTasks,
    ) -> Result<Removed> {
        let mut removed = Removed::default();
        let mut doomed: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        let mut marked = Vec::new();
        for link in links {
            if gone == GoneTasks::Delete && !link.has_work {
                doomed.entry(link.project).or_default().push(link.task_id);
            } else if link.exists {
                marked.push(link.link_id);
            }
        }
        Self::mark_links(conn, table, &marked).await?;
        removed.marked = marked.len() as u64;
        for (project, ids) in doomed {
            Self::delete_tasks(conn, project, &ids).await?;
            removed.deleted += ids.len() as u64;
            deleted.entry(project).or_default().extend(ids);
        }
        Ok(removed)
    }

    /// Sets `object_exists` to false on the links `ids` of `table`.
    async fn mark_links(conn: &mut DbConn, table: &Table, ids: &[i64]) -> Result<()> {
        for chunk in ids.chunks(LIST_CHUNK) {
            let mut query = QueryBuilder::<Db>::new(format!(
                "UPDATE {} SET object_exists = FALSE WHERE id",
                table.links
            ));
            push_in(&mut query, chunk.iter().copied());
            execute(&mut *conn, query, "marking the links of gone objects").await?;
        }
        Ok(())
    }

    /// Deletes the tasks `ids` of `project`, which have no work on them, as
    /// Label Studio's ORM deletes a task: the rows pointing at them first,
    /// then the tasks, then their data columns leave the project summary.
    async fn delete_tasks(conn: &mut DbConn, project: i64, ids: &[i64]) -> Result<()> {
        let context = "deleting the tasks of gone objects from Label Studio's database";
        for chunk in ids.chunks(LIST_CHUNK) {
            let mut query =
                QueryBuilder::<Db>::new("SELECT CAST(data AS TEXT) AS data FROM task WHERE id");
            push_in(&mut query, chunk.iter().copied());
            let rows = fetch_all(&mut *conn, query, context).await?;
            let data: Vec<Map<String, Value>> = rows
                .iter()
                .map(|row| match json_column(row, "data")? {
                    Value::Object(data) => Ok(data),
                    _ => Ok(Map::new()),
                })
                .collect::<Result<_>>()?;

            // What points at a prediction: its meta, and annotations of
            // other tasks made from it (Django's SET_NULL).
            for statement in [
                "DELETE FROM prediction_meta WHERE prediction_id IN \
                 (SELECT id FROM prediction WHERE task_id",
                "DELETE FROM prediction_meta WHERE failed_prediction_id IN \
                 (SELECT id FROM tasks_failedprediction WHERE task_id",
                "UPDATE task_completion SET parent_prediction_id = NULL WHERE \
                 parent_prediction_id IN (SELECT id FROM prediction WHERE task_id",
            ] {
                let mut query = QueryBuilder::<Db>::new(statement);
                push_in(&mut query, chunk.iter().copied());
                query.push(")");
                execute(&mut *conn, query, context).await?;
            }
            let links = TABLES
                .iter()
                .filter(|table| table.kind == storage_core::StorageKind::Import)
                .map(|table| (table.links, "task_id"));
            for (table, column) in TASK_DEPENDENTS.iter().copied().chain(links) {
                let mut query =
                    QueryBuilder::<Db>::new(format!("DELETE FROM {table} WHERE {column}"));
                push_in(&mut query, chunk.iter().copied());
                execute(&mut *conn, query, context).await?;
            }
            let mut query = QueryBuilder::<Db>::new("DELETE FROM task WHERE id");
            push_in(&mut query, chunk.iter().copied());
            execute(&mut *conn, query, context).await?;
            Self::update_summary(conn, project, |summary| summary.remove_data_columns(&data))
                .await?;
        }
        Ok(())
    }

    /// The links of `storage_id` to `key` with a row index (-1 for none)
    /// above `last_row`.
    async fn rows_after(
        conn: &mut DbConn,
        table: &Table,
        label_studio_id: i64,
        key: &str,
        last_row: i64,
    ) -> Result<Vec<LinkRow>> {
        let sql = format!(
            "SELECT {} FROM {} l JOIN task t ON t.id = l.task_id \
             WHERE l.storage_id = $1 AND l.key = $2 AND COALESCE(l.row_index, -1) > $3",
            link_row_columns(),
            table.links
        );
        let rows = sqlx::query(&sql)
            .bind(label_studio_id)
            .bind(key)
            .bind(last_row)
            .fetch_all(&mut *conn)
            .await
            .map_err(db("reading the links of rows gone from a task file"))?;
        rows.iter().map(LinkRow::read).collect()
    }

    /// Forgets the listing entries of those of `keys` no link points at any
    /// more (all their tasks were deleted).
    async fn forget_unlinked(
        conn: &mut DbConn,
        table: &Table,
        label_studio_id: i64,
        storage_id: i64,
        keys: &[String],
    ) -> Result<()> {
        for chunk in keys.chunks(LIST_CHUNK) {
            let mut query = QueryBuilder::<Db>::new(format!(
                "DELETE FROM {VERSIONS_TABLE} WHERE storage_id = "
            ));
            query.push_bind(storage_id).push(" AND key");
            push_in(&mut query, chunk.iter().map(String::as_str));
            query
                .push(format!(
                    " AND key NOT IN (SELECT key FROM {} WHERE storage_id = ",
                    table.links
                ))
                .push_bind(label_studio_id)
                .push(")");
            execute(
                &mut *conn,
                query,
                "forgetting the listing entries of deleted objects",
            )
            .await?;
        }
        Ok(())
    }

    /// Sends the webhooks of tasks a committed removal deleted.
    fn emit_deleted(&self, deleted: DeletedTasks) {
        for (project, ids) in deleted {
            self.emit_tasks(TaskEvent::Deleted, project, ids);
        }
    }
}

/// One linked row of a changed task file as a refresh compares it: its
/// link and its task's data.
struct RefreshRow {
    link: LinkRow,
    data: Value,
}

impl Engine {
    pub(super) async fn follow_linked_objects(
        &self,
        storage_id: i64,
        keys: &[String],
    ) -> Result<HashMap<String, LinkedObject>> {
        let (table, label_studio_id) = import_table(storage_id)?;
        let context = "reading the linked objects of a Label Studio storage";
        let mut conn = self.pool.acquire().await.map_err(db(context))?;
        let mut linked = HashMap::new();
        for chunk in keys.chunks(LIST_CHUNK) {
            let mut query = QueryBuilder::<Db>::new(format!(
                "SELECT l.key AS key, COUNT(*) AS tasks, MAX(v.etag) AS etag, \
                 MAX(v.size) AS size, MAX(v.last_modified) AS last_modified, \
                 COUNT(v.key) AS recorded FROM {} l LEFT JOIN {VERSIONS_TABLE} v \
                 ON v.key = l.key AND v.storage_id = ",
                table.links
            ));
            query
                .push_bind(storage_id)
                .push(" WHERE l.storage_id = ")
                .push_bind(label_studio_id)
                .push(" AND l.key");
            push_in(&mut query, chunk.iter().map(String::as_str));
            query
                .push(format!(
                    " AND l.key NOT IN (SELECT key FROM {UNFINISHED_TABLE} WHERE storage_id = "
                ))
                .push_bind(storage_id)
                .push(") GROUP BY l.key");
            let rows = fetch_all(&mut conn, query, context).await?;
            for row in &rows {
                let recorded = get::<i64>(row, "recorded")? > 0;
                let last_modified = if recorded {
                    get::<Option<i64>>(row, "last_modified")?
                        .and_then(DateTime::<Utc>::from_timestamp_micros)
                } else {
                    // Linked by Label Studio's own sync, which keeps no
                    // listing entry: as if read at the epoch, so the next
                    // following sync reads it once and records its entry.
                    Some(DateTime::<Utc>::UNIX_EPOCH)
                };
                let object = LinkedObject {
                    tasks: u64::try_from(get::<i64>(row, "tasks")?).unwrap_or(0),
                    etag: get(row, "etag")?,
                    size: get::<Option<i64>>(row, "size")?.and_then(|s| u64::try_from(s).ok()),
                    last_modified,
                };
                linked.insert(get(row, "key")?, object);
            }
        }
        Ok(linked)
    }

    pub(super) async fn follow_keys_between(
        &self,
        storage_id: i64,
        after: Option<&str>,
        upto: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let (table, label_studio_id) = import_table(storage_id)?;
        let mut query = QueryBuilder::<Db>::new(format!(
            "SELECT DISTINCT {KEY_ORDER} AS key FROM {} WHERE object_exists = TRUE \
             AND storage_id = ",
            table.links
        ));
        query.push_bind(label_studio_id);
        if let Some(after) = after {
            query.push(format!(" AND {KEY_ORDER} > ")).push_bind(after);
        }
        if let Some(upto) = upto {
            query.push(format!(" AND {KEY_ORDER} <= ")).push_bind(upto);
        }
        query
            .push(" ORDER BY 1 LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = query
            .build()
            .persistent(false)
            .fetch_all(&self.pool)
            .await
            .map_err(db("listing the linked keys of a Label Studio storage"))?;
        rows.iter().map(|row| get(row, "key")).collect()
    }

    /// One count, not the default's pages of keys: Label Studio's link
    /// tables have no index on `key`, so each page would read them all.
    pub(super) async fn follow_count_linked_objects(&self, storage_id: i64) -> Result<u64> {
        let (table, label_studio_id) = import_table(storage_id)?;
        let counts: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT COUNT(DISTINCT key) FROM {} WHERE storage_id = $1 AND object_exists = TRUE",
            table.links
        ))
        .bind(label_studio_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("counting the linked objects of a Label Studio storage"))?;
        Ok(counts
            .first()
            .map_or(0, |count| u64::try_from(*count).unwrap_or(0)))
    }

    pub(super) async fn follow_remove_objects(
        &self,
        storage_id: i64,
        keys: &[String],
        gone: GoneTasks,
    ) -> Result<Removed> {
        let (table, label_studio_id) = import_table(storage_id)?;
        let context = "removing the tasks of gone objects from Label Studio's database";
        let mut tx = self.begin_write(context).await?;
        let mut links = Vec::new();
        for chunk in keys.chunks(LIST_CHUNK) {
            let mut query = QueryBuilder::<Db>::new(format!(
                "SELECT {} FROM {} l JOIN task t ON t.id = l.task_id WHERE l.storage_id = ",
                link_row_columns(),
                table.links
            ));
            query.push_bind(label_studio_id).push(" AND l.key");
            push_in(&mut query, chunk.iter().map(String::as_str));
            let rows = fetch_all(&mut tx, query, context).await?;
            for row in &rows {
                links.push(LinkRow::read(row)?);
            }
        }
        let mut deleted = DeletedTasks::new();
        let removed = Self::remove_link_rows(&mut tx, table, links, gone, &mut deleted).await?;
        if gone == GoneTasks::Delete {
            Self::forget_unlinked(&mut tx, table, label_studio_id, storage_id, keys).await?;
        }
        tx.commit().await.map_err(db(context))?;
        self.emit_deleted(deleted);
        Ok(removed)
    }

    pub(super) async fn follow_refresh_tasks(
        &self,
        project: i64,
        storage_id: i64,
        tasks: Vec<NewTask>,
    ) -> Result<Refreshed> {
        let mut refreshed = Refreshed::default();
        if tasks.is_empty() {
            return Ok(refreshed);
        }
        let (table, label_studio_id) = import_table(storage_id)?;
        let context = "refreshing the tasks of changed task files in Label Studio's database";
        let mut tx = self.begin_write(context).await?;
        let overlap = Self::lock_project(&mut tx, project).await?;

        let mut keys: Vec<&str> = tasks.iter().map(|task| task.link.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        let rows = tasks.iter().map(|task| task.link.row_index.unwrap_or(-1));
        let (first, last) = (rows.clone().min().unwrap_or(-1), rows.max().unwrap_or(-1));
        let mut linked: HashMap<(String, i64), RefreshRow> = HashMap::new();
        for chunk in keys.chunks(LIST_CHUNK) {
            let mut query = QueryBuilder::<Db>::new(format!(
                "SELECT l.key AS key, CAST(COALESCE(l.row_index, -1) AS BIGINT) AS row_index, \
                 {}, CAST(t.data AS TEXT) AS data FROM {} l JOIN task t ON t.id = l.task_id \
                 WHERE l.storage_id = ",
                link_row_columns(),
                table.links
            ));
            query.push_bind(label_studio_id).push(" AND l.key");
            push_in(&mut query, chunk.iter().copied());
            query
                .push(" AND COALESCE(l.row_index, -1) BETWEEN ")
                .push_bind(first)
                .push(" AND ")
                .push_bind(last);
            let rows = fetch_all(&mut tx, query, context).await?;
            for row in &rows {
                let found = RefreshRow {
                    link: LinkRow::read(row)?,
                    data: json_column(row, "data")?,
                };
                linked.insert((get(row, "key")?, get(row, "row_index")?), found);
            }
        }

        let at = &stamp(crate::now());
        let mut fresh = Vec::new();
        let mut marked = Vec::new();
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for task in tasks {
            let row = (task.link.key.clone(), task.link.row_index.unwrap_or(-1));
            let Some(found) = linked.remove(&row) else {
                fresh.push(task);
                continue;
            };
            let data = task.data.to_object();
            // Compared as JSON: PostgreSQL's jsonb keeps its own key order
            // and spacing.
            if found.data.as_object() == Some(&data) {
                continue;
            }
            if found.link.has_work {
                if found.link.exists {
                    marked.push(found.link.link_id);
                }
                continue;
            }
            sqlx::query(&format!(
                "UPDATE task SET data = $1{JSON_CAST}, updated_at = $2 WHERE id = $3"
            ))
            .bind(task.data.as_str())
            .bind(at)
            .bind(found.link.task_id)
            .execute(&mut *tx)
            .await
            .map_err(db(context))?;
            before.push(match found.data {
                Value::Object(data) => data,
                _ => Map::new(),
            });
            after.push(data);
        }
        Self::mark_links(&mut tx, table, &marked).await?;
        refreshed.marked = marked.len() as u64;
        refreshed.updated = after.len() as u64;
        if !after.is_empty() {
            Self::update_summary(&mut tx, project, |summary| {
                summary.remove_data_columns(&before);
                summary.add_data_columns(&after);
            })
            .await?;
        }
        let ids = Self::insert_tasks(&mut tx, project, overlap, storage_id, &fresh).await?;
        refreshed.created = ids.len() as u64;
        tx.commit().await.map_err(db(context))?;
        self.emit_tasks(TaskEvent::Created, project, ids);
        Ok(refreshed)
    }

    pub(super) async fn follow_settle_objects(
        &self,
        storage_id: i64,
        objects: &[SettledObject],
        gone: Option<GoneTasks>,
    ) -> Result<Removed> {
        if objects.is_empty() {
            return Ok(Removed::default());
        }
        let (table, label_studio_id) = import_table(storage_id)?;
        let context = "recording changed objects of a Label Studio storage";
        let mut tx = self.begin_write(context).await?;
        let mut removed = Removed::default();
        let mut deleted = DeletedTasks::new();
        for object in objects {
            if let (Some(last_row), Some(gone)) = (object.last_row, gone) {
                let links =
                    Self::rows_after(&mut tx, table, label_studio_id, &object.key, last_row)
                        .await?;
                let more =
                    Self::remove_link_rows(&mut tx, table, links, gone, &mut deleted).await?;
                removed = removed.plus(more);
            }
        }
        let entries = objects.iter().map(|object| ListingEntry {
            key: &object.key,
            etag: object.etag.as_deref(),
            size: object.size,
            last_modified: object.last_modified,
        });
        Self::record_listing_entries(&mut tx, storage_id, entries).await?;
        tx.commit().await.map_err(db(context))?;
        self.emit_deleted(deleted);
        Ok(removed)
    }
}
