//! Tasks as Label Studio's `ImportStorage.add_task` writes them: a `task`
//! row (`inner_id` continuing the project's, `overlap` the project's
//! `maximum_annotations`, the counters and `is_labeled` from the task's
//! annotations and predictions), its link row in the storage's link table,
//! and its predictions and annotations. A batch is one short transaction.
//!
//! This file is compiled twice, as a child module of each engine
//! (`sqlite::tasks`, `postgres::tasks`); `super` is the engine.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{QueryBuilder, Row};
use storage_core::persist::{
    GoneTasks, LinkedObject, NewTask, Refreshed, Removed, SettledObject, TaskSink,
};
use storage_core::{Error, Result};

use crate::catalogue::{table_of, Table};
use crate::summary::Summary;
use crate::UNFINISHED_TABLE;

use super::follow::ListingEntry;
use super::rows::{fetch_all, json_column, push_in};
use super::webhooks::TaskEvent;
use super::{db, stamp, Db, DbConn, Engine, JSON_CAST, MAX_VARIABLES, ROW_LOCK};

/// The import table of storage `id`.
pub(super) fn import_table(id: i64) -> Result<(&'static Table, i64)> {
    table_of(id).ok_or_else(|| Error::not_found(format!("storage {id}")))
}

/// Values per `IN` list, leaving room for a statement's other values.
pub(super) const LIST_CHUNK: usize = 5_000;

const WRITE_CONTEXT: &str = "writing tasks into Label Studio's database";
const SUMMARY_CONTEXT: &str = "updating a Label Studio project's summary";

/// Task rows per `INSERT` (15 values each), under every engine's limit.
const TASKS_PER_STATEMENT: usize = if MAX_VARIABLES / 15 < 1_000 {
    MAX_VARIABLES / 15
} else {
    1_000
};

/// Who saved the task last: the author of its last annotation, as Label
/// Studio's annotation save records it.
fn last_annotator(task: &NewTask) -> Option<i64> {
    task.annotations
        .iter()
        .rev()
        .find_map(|a| a.get("completed_by").and_then(Value::as_i64))
}

/// What `add_task` counts of a task's annotations and predictions.
struct Counts {
    annotations: i64,
    cancelled: i64,
    predictions: i64,
}

fn counts(task: &NewTask) -> Counts {
    let cancelled = task
        .annotations
        .iter()
        .filter(|a| a.get("was_cancelled").and_then(Value::as_bool) == Some(true))
        .count() as i64;
    Counts {
        annotations: task.annotations.len() as i64 - cancelled,
        cancelled,
        predictions: task.predictions.len() as i64,
    }
}

/// `SELECT {columns} FROM` the links of Label Studio storage `storage`
/// whose key is one of `keys`; the caller adds what follows.
fn links_among<'a>(
    columns: &str,
    table: &Table,
    storage: i64,
    keys: impl IntoIterator<Item = &'a str>,
) -> QueryBuilder<'a, Db> {
    let mut query = QueryBuilder::<Db>::new(format!(
        "SELECT {columns} FROM {} WHERE storage_id = ",
        table.links
    ));
    query.push_bind(storage).push(" AND key");
    push_in(&mut query, keys);
    query
}

impl Engine {
    /// `(key, row_index)` of the links of `storage` among `keys`.
    async fn linked_pairs(
        conn: &mut DbConn,
        table: &Table,
        storage: i64,
        keys: &[&str],
    ) -> Result<HashSet<(String, Option<i64>)>> {
        let mut pairs = HashSet::new();
        for chunk in keys.chunks(LIST_CHUNK) {
            let query = links_among(
                "key, CAST(row_index AS BIGINT) AS row_index",
                table,
                storage,
                chunk.iter().copied(),
            );
            let rows = fetch_all(&mut *conn, query, "reading Label Studio's storage links").await?;
            for row in rows {
                pairs.insert((
                    row.try_get("key").map_err(db("reading a link key"))?,
                    row.try_get("row_index").map_err(db("reading a link row"))?,
                ));
            }
        }
        Ok(pairs)
    }

    async fn write_predictions(
        conn: &mut DbConn,
        project: i64,
        task: i64,
        predictions: &[Value],
        at: &super::Stamp,
    ) -> Result<()> {
        for prediction in predictions {
            let sql = format!(
                "INSERT INTO prediction (result, score, model_version, created_at, updated_at, \
                 task_id, project_id, mislabeling) VALUES ($1{JSON_CAST}, $2, $3, $4, $4, $5, \
                 $6, 0.0)"
            );
            sqlx::query(&sql)
                .bind(prediction.get("result").unwrap_or(&Value::Null).to_string())
                .bind(prediction.get("score").and_then(Value::as_f64))
                .bind(
                    prediction
                        .get("model_version")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                )
                .bind(at)
                .bind(task)
                .bind(project)
                .execute(&mut *conn)
                .await
                .map_err(db("writing a Label Studio prediction"))?;
        }
        Ok(())
    }

    async fn write_annotations(
        conn: &mut DbConn,
        project: i64,
        task: i64,
        annotations: &[Value],
        at: &super::Stamp,
    ) -> Result<()> {
        for annotation in annotations {
            let result = annotation.get("result").cloned().unwrap_or(Value::Null);
            let result_count = result.as_array().map_or(0, Vec::len) as i64;
            let sql = format!(
                "INSERT INTO task_completion (result, was_cancelled, created_at, updated_at, \
                 task_id, project_id, lead_time, result_count, completed_by_id, updated_by_id, \
                 ground_truth, unique_id, prediction, bulk_created) VALUES ($1{JSON_CAST}, $2, \
                 $3, $3, $4, $5, $6, $7, $8, $8, $9, $10, '{{}}'{JSON_CAST}, FALSE)"
            );
            sqlx::query(&sql)
                .bind(result.to_string())
                .bind(
                    annotation
                        .get("was_cancelled")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                )
                .bind(at)
                .bind(task)
                .bind(project)
                .bind(annotation.get("lead_time").and_then(Value::as_f64))
                .bind(result_count)
                .bind(annotation.get("completed_by").and_then(Value::as_i64))
                .bind(
                    annotation
                        .get("ground_truth")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                )
                .bind(uuid::Uuid::new_v4().simple().to_string())
                .execute(&mut *conn)
                .await
                .map_err(db("writing a Label Studio annotation"))?;
        }
        Ok(())
    }
}

impl Engine {
    /// The project's summary, `None` for a project without one (it has
    /// none to update).
    pub(super) async fn read_summary(conn: &mut DbConn, project: i64) -> Result<Option<Summary>> {
        let rows = sqlx::query(
            "SELECT CAST(all_data_columns AS TEXT) AS all_data_columns, \
             CAST(common_data_columns AS TEXT) AS common_data_columns, \
             CAST(created_annotations AS TEXT) AS created_annotations, \
             CAST(created_labels AS TEXT) AS created_labels \
             FROM projects_projectsummary WHERE project_id = $1",
        )
        .bind(project)
        .fetch_all(&mut *conn)
        .await
        .map_err(db(SUMMARY_CONTEXT))?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let read = |column: &str| json_column(row, column);
        let object = |value: Value| match value {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        Ok(Some(Summary {
            all_data_columns: object(read("all_data_columns")?),
            common_data_columns: serde_json::from_value(read("common_data_columns")?)
                .unwrap_or_default(),
            created_annotations: object(read("created_annotations")?),
            created_labels: object(read("created_labels")?),
        }))
    }

    pub(super) async fn write_summary(
        conn: &mut DbConn,
        project: i64,
        summary: Summary,
    ) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE projects_projectsummary SET all_data_columns = $1{JSON_CAST}, \
             common_data_columns = $2{JSON_CAST}, created_annotations = $3{JSON_CAST}, \
             created_labels = $4{JSON_CAST} WHERE project_id = $5"
        ))
        .bind(Value::Object(summary.all_data_columns).to_string())
        .bind(Value::from(summary.common_data_columns).to_string())
        .bind(Value::Object(summary.created_annotations).to_string())
        .bind(Value::Object(summary.created_labels).to_string())
        .bind(project)
        .execute(&mut *conn)
        .await
        .map_err(db(SUMMARY_CONTEXT))?;
        Ok(())
    }

    /// Changes the project's summary as `change` says, as Label Studio's
    /// import and deletion do.
    pub(super) async fn update_summary(
        conn: &mut DbConn,
        project: i64,
        change: impl FnOnce(&mut Summary),
    ) -> Result<()> {
        if let Some(mut summary) = Self::read_summary(conn, project).await? {
            change(&mut summary);
            Self::write_summary(conn, project, summary).await?;
        }
        Ok(())
    }

    /// The project's `maximum_annotations` (a task's `overlap`), its row
    /// held to the end of the transaction: task creation in one project is
    /// serialized, so inner ids and the dedupe check never race (on SQLite
    /// the transaction holds the write lock already).
    pub(super) async fn lock_project(conn: &mut DbConn, project: i64) -> Result<i64> {
        let overlap: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT CAST(maximum_annotations AS BIGINT) FROM project WHERE id = $1{ROW_LOCK}"
        ))
        .bind(project)
        .fetch_all(&mut *conn)
        .await
        .map_err(db(WRITE_CONTEXT))?;
        overlap
            .first()
            .copied()
            .ok_or_else(|| Error::not_found(format!("Label Studio project {project}")))
    }

    /// Inserts `tasks` (none of them linked yet) with their links, their
    /// predictions and annotations, and counts them into the project's
    /// summary; returns their ids.
    pub(super) async fn insert_tasks(
        conn: &mut DbConn,
        project: i64,
        overlap: i64,
        storage_id: i64,
        tasks: &[NewTask],
    ) -> Result<Vec<i64>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let (table, label_studio_id) = import_table(storage_id)?;
        let last_inner: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(MAX(inner_id), 0) AS BIGINT) FROM task WHERE project_id = $1",
        )
        .bind(project)
        .fetch_one(&mut *conn)
        .await
        .map_err(db(WRITE_CONTEXT))?;
        let at = &stamp(crate::now());

        let mut ids = Vec::with_capacity(tasks.len());
        for (chunk_index, chunk) in tasks.chunks(TASKS_PER_STATEMENT).enumerate() {
            let mut query = QueryBuilder::<Db>::new(
                "INSERT INTO task (data, meta, created_at, updated_at, is_labeled, project_id, \
                 overlap, inner_id, total_annotations, cancelled_annotations, \
                 total_predictions, comment_count, unresolved_comment_count, allow_skip, \
                 updated_by_id) ",
            );
            let first = last_inner + 1 + (chunk_index * TASKS_PER_STATEMENT) as i64;
            query.push_values(chunk.iter().enumerate(), |mut row, (i, task)| {
                let counts = counts(task);
                row.push_bind(task.data.as_str().to_string())
                    .push_unseparated(JSON_CAST)
                    .push("'{}'")
                    .push_unseparated(JSON_CAST)
                    .push_bind(at)
                    .push_bind(at)
                    .push_bind(counts.annotations + counts.cancelled >= overlap)
                    .push_bind(project)
                    .push_bind(overlap)
                    .push_bind(first + i as i64)
                    .push_bind(counts.annotations)
                    .push_bind(counts.cancelled)
                    .push_bind(counts.predictions)
                    .push("0")
                    .push("0")
                    .push_bind(task.allow_skip)
                    .push_bind(last_annotator(task));
            });
            query.push(" RETURNING CAST(id AS BIGINT) AS id");
            let rows = query
                .build()
                .fetch_all(&mut *conn)
                .await
                .map_err(db(WRITE_CONTEXT))?;
            for row in rows {
                ids.push(row.try_get::<i64, _>("id").map_err(db(WRITE_CONTEXT))?);
            }
        }

        for (chunk_tasks, chunk_ids) in tasks
            .chunks(TASKS_PER_STATEMENT)
            .zip(ids.chunks(TASKS_PER_STATEMENT))
        {
            let mut query = QueryBuilder::<Db>::new(format!(
                "INSERT INTO {} (key, object_exists, created_at, task_id, storage_id, row_group, \
                 row_index) ",
                table.links
            ));
            query.push_values(chunk_tasks.iter().zip(chunk_ids), |mut row, (task, id)| {
                row.push_bind(task.link.key.as_str())
                    .push("TRUE")
                    .push_bind(at)
                    .push_bind(*id)
                    .push_bind(label_studio_id)
                    .push_bind(task.link.row_group)
                    .push_bind(task.link.row_index);
            });
            query
                .build()
                .execute(&mut *conn)
                .await
                .map_err(db(WRITE_CONTEXT))?;
        }

        for (task, id) in tasks.iter().zip(&ids) {
            Self::write_predictions(conn, project, *id, &task.predictions, at).await?;
            Self::write_annotations(conn, project, *id, &task.annotations, at).await?;
        }
        Self::update_summary(conn, project, |summary| summary.add(tasks)).await?;
        Ok(ids)
    }
}

#[async_trait]
impl TaskSink for Engine {
    async fn linked_keys(&self, storage_id: i64, keys: &[String]) -> Result<HashMap<String, u64>> {
        let (table, label_studio_id) = import_table(storage_id)?;
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(db("reading Label Studio's storage links"))?;
        let mut linked = HashMap::new();
        for chunk in keys.chunks(LIST_CHUNK) {
            let mut query = links_among(
                "key, COUNT(*) AS n",
                table,
                label_studio_id,
                chunk.iter().map(String::as_str),
            );
            query.push(format!(
                " AND key NOT IN (SELECT key FROM {UNFINISHED_TABLE} WHERE storage_id = "
            ));
            query.push_bind(storage_id).push(") GROUP BY key");
            let rows = fetch_all(&mut conn, query, "reading Label Studio's storage links").await?;
            for row in rows {
                let key: String = row.try_get("key").map_err(db("reading a link key"))?;
                let count: i64 = row.try_get("n").map_err(db("counting links"))?;
                linked.insert(key, u64::try_from(count).unwrap_or(0));
            }
        }
        Ok(linked)
    }

    async fn has_links(&self, storage_id: i64) -> Result<bool> {
        let (table, label_studio_id) = import_table(storage_id)?;
        // Served by the index Django gives the link's storage foreign key.
        sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE storage_id = $1)",
            table.links
        ))
        .bind(label_studio_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db("reading Label Studio's storage links"))
    }

    async fn begin_object(&self, storage_id: i64, key: &str) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO {UNFINISHED_TABLE} (storage_id, key) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING"
        ))
        .bind(storage_id)
        .bind(key)
        .execute(&self.pool)
        .await
        .map_err(db("marking a task file unfinished"))?;
        Ok(())
    }

    async fn finish_object(&self, storage_id: i64, key: &str) -> Result<()> {
        sqlx::query(&format!(
            "DELETE FROM {UNFINISHED_TABLE} WHERE storage_id = $1 AND key = $2"
        ))
        .bind(storage_id)
        .bind(key)
        .execute(&self.pool)
        .await
        .map_err(db("marking a task file finished"))?;
        Ok(())
    }

    async fn count_linked_rows(
        &self,
        storage_id: i64,
        key: &str,
        rows: std::ops::RangeInclusive<i64>,
    ) -> Result<u64> {
        let (table, label_studio_id) = import_table(storage_id)?;
        let count: i64 = sqlx::query_scalar::<_, i64>(&format!(
            "SELECT COUNT(*) FROM {} WHERE storage_id = $1 AND key = $2 \
             AND row_index BETWEEN $3 AND $4",
            table.links
        ))
        .bind(label_studio_id)
        .bind(key)
        .bind(*rows.start())
        .bind(*rows.end())
        .fetch_all(&self.pool)
        .await
        .map_err(db("counting Label Studio's storage links"))?
        .into_iter()
        .sum();
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn linked_since(&self, storage_id: i64, since: DateTime<Utc>) -> Result<Option<u64>> {
        let (table, label_studio_id) = import_table(storage_id)?;
        let count: i64 = sqlx::query_scalar::<_, i64>(&format!(
            "SELECT COUNT(*) FROM {} WHERE storage_id = $1 AND created_at >= $2",
            table.links
        ))
        .bind(label_studio_id)
        .bind(stamp(since))
        .fetch_all(&self.pool)
        .await
        .map_err(db("counting Label Studio's storage links"))?
        .into_iter()
        .sum();
        Ok(Some(u64::try_from(count).unwrap_or(0)))
    }

    async fn create_tasks(
        &self,
        project: i64,
        storage_id: i64,
        tasks: Vec<NewTask>,
    ) -> Result<u64> {
        if tasks.is_empty() {
            return Ok(0);
        }
        let (table, label_studio_id) = import_table(storage_id)?;
        let mut tx = self.begin_write(WRITE_CONTEXT).await?;
        let overlap = Self::lock_project(&mut tx, project).await?;
        let keys: Vec<&str> = tasks.iter().map(|t| t.link.key.as_str()).collect();
        let mut linked = Self::linked_pairs(&mut tx, table, label_studio_id, &keys).await?;
        let tasks: Vec<NewTask> = tasks
            .into_iter()
            .filter(|t| linked.insert((t.link.key.clone(), t.link.row_index)))
            .collect();
        let ids = Self::insert_tasks(&mut tx, project, overlap, storage_id, &tasks).await?;
        // Only here: a refresh leaves the entry as it was until the changed
        // file is settled, so a refresh cut short finds it changed again.
        let entries = tasks.iter().map(|task| ListingEntry::from(&task.link));
        Self::record_listing_entries(&mut tx, storage_id, entries).await?;
        tx.commit().await.map_err(db(WRITE_CONTEXT))?;
        let created = ids.len() as u64;
        self.emit_tasks(TaskEvent::Created, project, ids);
        Ok(created)
    }

    // Following the bucket: see `follow.rs`.

    async fn linked_objects(
        &self,
        storage_id: i64,
        keys: &[String],
    ) -> Result<HashMap<String, LinkedObject>> {
        self.follow_linked_objects(storage_id, keys).await
    }

    async fn linked_keys_between(
        &self,
        storage_id: i64,
        after: Option<&str>,
        upto: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.follow_keys_between(storage_id, after, upto, limit)
            .await
    }

    async fn count_linked_objects(&self, storage_id: i64) -> Result<u64> {
        self.follow_count_linked_objects(storage_id).await
    }

    async fn remove_objects(
        &self,
        storage_id: i64,
        keys: &[String],
        gone: GoneTasks,
    ) -> Result<Removed> {
        self.follow_remove_objects(storage_id, keys, gone).await
    }

    async fn refresh_tasks(
        &self,
        project: i64,
        storage_id: i64,
        tasks: Vec<NewTask>,
    ) -> Result<Refreshed> {
        self.follow_refresh_tasks(project, storage_id, tasks).await
    }

    async fn settle_objects(
        &self,
        storage_id: i64,
        objects: &[SettledObject],
        gone: Option<GoneTasks>,
    ) -> Result<Removed> {
        self.follow_settle_objects(storage_id, objects, gone).await
    }
}
