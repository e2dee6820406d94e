//! What syncs that follow the bucket need of the links (the follow part of
//! `TaskSink`): linked objects with their recorded listing entry, linked
//! keys in byte order, and the removal, refresh and settling of the tasks
//! of gone and changed objects, each call one transaction.
//!
//! Compiled twice, like `tasks.rs` (see the note at its top): `super` is
//! the engine module.

use std::collections::HashMap;

use sqlx::QueryBuilder;
use storage_core::persist::{
    GoneTasks, LinkedObject, NewTask, ObjectLink, Refreshed, Removed, SettledObject,
};
use storage_core::webhooks::Action;
use storage_core::Result;

use super::rows::{db, execute, fetch_all, get};
use crate::shape::{now, CounterDelta, TaskTally};
use crate::sql::TaskInput;

use super::{push_list, read_time, stamp, Db, DbConn, DbRow, Engine, KEY_ORDER, LIST_CHUNK};

/// A link of a gone or changed object, with what its removal needs.
struct LinkRow {
    link_id: i64,
    task_id: i64,
    project: i64,
    exists: bool,
    annotated: bool,
    is_labeled: bool,
    predictions: i64,
}

/// Link columns under `l` joined with their task `t`, as [`LinkRow`]
/// reads them.
const LINK_ROW_COLUMNS: &str = "l.id AS link_id, l.task_id, t.project_id, l.object_exists, \
    t.is_labeled, t.total_predictions, \
    EXISTS (SELECT 1 FROM annotations a WHERE a.task_id = t.id) AS annotated";

impl LinkRow {
    fn read(row: &DbRow) -> Result<Self> {
        Ok(Self {
            link_id: get(row, "link_id")?,
            task_id: get(row, "task_id")?,
            project: get(row, "project_id")?,
            exists: get(row, "object_exists")?,
            annotated: get(row, "annotated")?,
            is_labeled: get(row, "is_labeled")?,
            predictions: get(row, "total_predictions")?,
        })
    }
}

impl Engine {
    /// Removes the tasks of `links` as `gone` says: deletes those without
    /// annotations (their links, annotations and predictions go with them,
    /// and the project counters follow), marks the others' links.
    async fn remove_link_rows(
        conn: &mut DbConn,
        links: Vec<LinkRow>,
        gone: GoneTasks,
        context: &str,
    ) -> Result<Removed> {
        let mut deleted = Vec::new();
        let mut deleted_by_project: HashMap<i64, Vec<i64>> = HashMap::new();
        let mut marked = Vec::new();
        let mut deltas: HashMap<i64, CounterDelta> = HashMap::new();
        for link in links {
            if gone == GoneTasks::Delete && !link.annotated {
                let tally = TaskTally {
                    is_labeled: link.is_labeled,
                    useful: false,
                };
                let delta = deltas.entry(link.project).or_default();
                *delta = delta
                    .plus(CounterDelta::task(Some(tally), None))
                    .plus(CounterDelta::predictions(-link.predictions));
                deleted.push(link.task_id);
                deleted_by_project
                    .entry(link.project)
                    .or_default()
                    .push(link.task_id);
            } else if link.exists {
                marked.push(link.link_id);
            }
        }
        for ids in deleted.chunks(LIST_CHUNK) {
            let mut query = QueryBuilder::<Db>::new("DELETE FROM tasks WHERE id");
            push_list(&mut query, ids.to_vec());
            execute(conn, query, context).await?;
        }
        mark_links(conn, &marked, context).await?;
        for (project, delta) in deltas {
            Self::bump_project(conn, project, delta, context).await?;
        }
        for (project, ids) in deleted_by_project {
            Self::record_tasks_event(conn, project, Action::TasksDeleted, &ids).await?;
        }
        Ok(Removed {
            deleted: deleted.len() as u64,
            marked: marked.len() as u64,
        })
    }

    /// The links of `storage_id` to `key` with a row index (-1 for none)
    /// above `last_row`.
    async fn rows_after(
        conn: &mut DbConn,
        storage_id: i64,
        key: &str,
        last_row: i64,
        context: &str,
    ) -> Result<Vec<LinkRow>> {
        let sql = format!(
            "SELECT {LINK_ROW_COLUMNS} FROM storage_links l JOIN tasks t ON t.id = l.task_id
             WHERE l.storage_id = $1 AND l.key = $2 AND COALESCE(l.row_index, -1) > $3"
        );
        let rows = sqlx::query(&sql)
            .bind(storage_id)
            .bind(key)
            .bind(last_row)
            .fetch_all(&mut *conn)
            .await
            .map_err(db(context))?;
        rows.iter().map(LinkRow::read).collect()
    }
}

/// Sets `object_exists` to false on the links `ids`.
async fn mark_links(conn: &mut DbConn, ids: &[i64], context: &str) -> Result<()> {
    for ids in ids.chunks(LIST_CHUNK) {
        let mut query =
            QueryBuilder::<Db>::new("UPDATE storage_links SET object_exists = FALSE WHERE id");
        push_list(&mut query, ids.to_vec());
        execute(conn, query, context).await?;
    }
    Ok(())
}

/// One linked row of a changed task file as a refresh compares it.
struct RefreshRow {
    link_id: i64,
    task_id: i64,
    exists: bool,
    annotated: bool,
    data: String,
}

impl Engine {
    pub(super) async fn follow_linked_objects(
        &self,
        storage_id: i64,
        keys: &[String],
    ) -> Result<HashMap<String, LinkedObject>> {
        let context = format!("looking up linked objects of storage {storage_id}");
        let mut conn = self.pool.acquire().await.map_err(db(context.as_str()))?;
        let mut linked = HashMap::new();
        for chunk in keys.chunks(LIST_CHUNK) {
            let mut query = QueryBuilder::<Db>::new(
                "SELECT key, COUNT(*) AS tasks, MAX(etag) AS etag, MAX(size) AS size, \
                 MAX(last_modified) AS last_modified FROM storage_links WHERE storage_id = ",
            );
            query.push_bind(storage_id).push(" AND key");
            push_list(&mut query, chunk.iter().map(String::as_str).collect());
            query
                .push(" AND key NOT IN (SELECT key FROM unfinished_objects WHERE storage_id = ")
                .push_bind(storage_id)
                .push(") GROUP BY key");
            let rows = fetch_all(&mut conn, query, &context).await?;
            for row in &rows {
                let key: String = get(row, "key")?;
                let object = LinkedObject {
                    tasks: u64::try_from(get::<i64>(row, "tasks")?).unwrap_or(0),
                    etag: get(row, "etag")?,
                    size: get::<Option<i64>>(row, "size")?.and_then(|s| u64::try_from(s).ok()),
                    last_modified: read_time(row, "last_modified", || {
                        format!("the link of \"{key}\" in storage {storage_id}")
                    })?,
                };
                linked.insert(key, object);
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
        let mut query = QueryBuilder::<Db>::new(format!(
            "SELECT DISTINCT {KEY_ORDER} AS key FROM storage_links \
             WHERE object_exists = TRUE AND storage_id = "
        ));
        query.push_bind(storage_id);
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
            .map_err(db(format!(
                "listing the linked keys of storage {storage_id}"
            )))?;
        rows.iter().map(|row| get(row, "key")).collect()
    }

    pub(super) async fn follow_remove_objects(
        &self,
        storage_id: i64,
        keys: &[String],
        gone: GoneTasks,
    ) -> Result<Removed> {
        let context = format!("removing the tasks of gone objects of storage {storage_id}");
        let mut tx = self.begin_write(&context).await?;
        let mut links = Vec::new();
        for chunk in keys.chunks(LIST_CHUNK) {
            let mut query = QueryBuilder::<Db>::new(format!(
                "SELECT {LINK_ROW_COLUMNS} FROM storage_links l JOIN tasks t ON t.id = l.task_id \
                 WHERE l.storage_id = "
            ));
            query.push_bind(storage_id).push(" AND l.key");
            push_list(&mut query, chunk.iter().map(String::as_str).collect());
            let rows = fetch_all(&mut tx, query, &context).await?;
            for row in &rows {
                links.push(LinkRow::read(row)?);
            }
        }
        let removed = Self::remove_link_rows(&mut tx, links, gone, &context).await?;
        tx.commit().await.map_err(db(context.as_str()))?;
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
        let context = format!("refreshing tasks of changed objects of storage {storage_id}");
        let mut tx = self.begin_write(&context).await?;
        let defaults = Self::lock_project(&mut tx, project, &context).await?;

        let mut keys: Vec<&str> = tasks.iter().map(|task| task.link.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        let rows = tasks.iter().map(|task| task.link.row_index.unwrap_or(-1));
        let (first, last) = (rows.clone().min().unwrap_or(-1), rows.max().unwrap_or(-1));
        let mut linked: HashMap<(String, i64), RefreshRow> = HashMap::new();
        for chunk in keys.chunks(LIST_CHUNK) {
            let mut query = QueryBuilder::<Db>::new(
                "SELECT l.key, COALESCE(l.row_index, -1) AS row_index, l.id AS link_id, \
                 l.task_id, l.object_exists, t.data, \
                 EXISTS (SELECT 1 FROM annotations a WHERE a.task_id = t.id) AS annotated \
                 FROM storage_links l JOIN tasks t ON t.id = l.task_id WHERE l.storage_id = ",
            );
            query.push_bind(storage_id).push(" AND l.key");
            push_list(&mut query, chunk.to_vec());
            query
                .push(" AND COALESCE(l.row_index, -1) BETWEEN ")
                .push_bind(first)
                .push(" AND ")
                .push_bind(last);
            let rows = fetch_all(&mut tx, query, &context).await?;
            for row in &rows {
                let at = (get(row, "key")?, get(row, "row_index")?);
                let found = RefreshRow {
                    link_id: get(row, "link_id")?,
                    task_id: get(row, "task_id")?,
                    exists: get(row, "object_exists")?,
                    annotated: get(row, "annotated")?,
                    data: get(row, "data")?,
                };
                linked.insert(at, found);
            }
        }

        let at = now();
        let mut fresh: Vec<(TaskInput, ObjectLink)> = Vec::new();
        let mut marked = Vec::new();
        for task in tasks {
            let row = (task.link.key.clone(), task.link.row_index.unwrap_or(-1));
            let (input, link) = TaskInput::of(task);
            let Some(found) = linked.remove(&row) else {
                fresh.push((input, link));
                continue;
            };
            if found.data == input.data {
                continue;
            }
            if found.annotated {
                if found.exists {
                    marked.push(found.link_id);
                }
                continue;
            }
            sqlx::query("UPDATE tasks SET data = $1, updated_at = $2 WHERE id = $3")
                .bind(input.data)
                .bind(stamp(at))
                .bind(found.task_id)
                .execute(&mut *tx)
                .await
                .map_err(db(context.as_str()))?;
            refreshed.updated += 1;
        }
        mark_links(&mut tx, &marked, &context).await?;
        refreshed.marked = marked.len() as u64;

        let (inputs, links): (Vec<TaskInput>, Vec<ObjectLink>) = fresh.into_iter().unzip();
        if !inputs.is_empty() {
            let ids = Self::insert_tasks(&mut tx, project, &defaults, inputs, at, &context).await?;
            let links: Vec<(i64, &ObjectLink)> = ids.iter().copied().zip(&links).collect();
            Self::insert_link_rows(&mut tx, storage_id, &links, &stamp(at), &context).await?;
            refreshed.created = links.len() as u64;
        }
        tx.commit().await.map_err(db(context.as_str()))?;
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
        let context = format!("recording changed objects of storage {storage_id}");
        let mut tx = self.begin_write(&context).await?;
        let mut removed = Removed::default();
        for object in objects {
            if let (Some(last_row), Some(gone)) = (object.last_row, gone) {
                let links =
                    Self::rows_after(&mut tx, storage_id, &object.key, last_row, &context).await?;
                removed =
                    removed.plus(Self::remove_link_rows(&mut tx, links, gone, &context).await?);
            }
            sqlx::query(
                "UPDATE storage_links SET etag = $1, size = $2, last_modified = $3
                 WHERE storage_id = $4 AND key = $5",
            )
            .bind(object.etag.as_deref())
            .bind(
                object
                    .size
                    .map(|size| i64::try_from(size).unwrap_or(i64::MAX)),
            )
            .bind(object.last_modified.map(stamp))
            .bind(storage_id)
            .bind(object.key.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db(context.as_str()))?;
        }
        tx.commit().await.map_err(db(context.as_str()))?;
        Ok(removed)
    }
}
