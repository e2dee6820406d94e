//! Task creation with storage links and the dedupe lookups of import
//! syncs (`TaskSink`), and the task insertion the host's task import uses
//! too. How a batch of task and link rows is inserted and how linked keys
//! are looked up are the engine's own (`insert_task_rows`,
//! `insert_link_rows`, `linked_key_counts`, `linked_row_pairs`).
//!
//! This file is compiled twice, as a child module of each engine:
//! `sqlite::tasks` and `postgres::tasks` (the `#[path]` module declarations
//! at the end of `src/sqlite.rs` and `src/postgres.rs`). So `super` is the
//! engine module, and the `use super::{...}` lines below name everything
//! this file takes from it; every other name is an ordinary import.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::query_builder::Separated;
use sqlx::QueryBuilder;
use storage_core::persist::{
    GoneTasks, LinkedObject, NewTask, ObjectLink, Refreshed, Removed, SettledObject, TaskSink,
};
use storage_core::webhooks::Action;
use storage_core::{Error, Result};

use super::rows::{db, get};
use crate::shape::{now, CounterDelta, Counters, FileAnnotation, FilePrediction, TaskTally};
use crate::sql::{rows_per_statement, statement_sizes, ProjectDefaults, TaskInput, TaskValues};

// From the engine module: the engine, its database and connection types,
// how it binds a time, its limits of bound values and the clause that
// locks a row (the engine's own inserts and lookups are its methods).
use super::{stamp, Db, DbConn, Engine, LIST_CHUNK, MAX_VARIABLES, ROW_LOCK};

impl Engine {
    /// Reads what new tasks of `project` inherit, holding the project's row
    /// until the transaction ends: task creation in one project is
    /// serialized, so inner ids and the dedupe check never race.
    pub(super) async fn lock_project(
        conn: &mut DbConn,
        project: i64,
        context: &str,
    ) -> Result<ProjectDefaults> {
        let sql =
            format!("SELECT created_by, maximum_annotations FROM projects WHERE id = $1{ROW_LOCK}");
        let row = sqlx::query(&sql)
            .bind(project)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db(context))?
            .ok_or_else(|| Error::not_found(format!("project {project}")))?;
        Ok(ProjectDefaults {
            creator: get(&row, "created_by")?,
            overlap: get::<i64>(&row, "maximum_annotations")?.max(1),
        })
    }

    /// Creates tasks with their annotations and predictions in `conn`'s
    /// transaction, after [`Engine::lock_project`]; returns their ids in the
    /// order of `tasks`.
    pub(super) async fn insert_tasks(
        conn: &mut DbConn,
        project: i64,
        defaults: &ProjectDefaults,
        tasks: Vec<TaskInput>,
        at: DateTime<Utc>,
        context: &str,
    ) -> Result<Vec<i64>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let first_inner: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(inner_id), 0) + 1 FROM tasks WHERE project_id = $1",
        )
        .bind(project)
        .fetch_one(&mut *conn)
        .await
        .map_err(db(context))?;

        struct Prepared {
            annotations: Vec<FileAnnotation>,
            predictions: Vec<FilePrediction>,
        }
        let mut rows = Vec::with_capacity(tasks.len());
        let mut prepared = Vec::with_capacity(tasks.len());
        let mut delta = CounterDelta::default();
        for (input, inner_id) in tasks.into_iter().zip(first_inner..) {
            let annotations: Vec<_> = input
                .annotations
                .iter()
                .filter_map(FileAnnotation::from_value)
                .collect();
            let predictions: Vec<_> = input
                .predictions
                .iter()
                .filter_map(FilePrediction::from_value)
                .collect();
            let cancelled = annotations.iter().filter(|a| a.was_cancelled).count() as i64;
            let counters = Counters {
                total_annotations: annotations.len() as i64 - cancelled,
                cancelled_annotations: cancelled,
                total_predictions: predictions.len() as i64,
            };
            let is_labeled = counters.is_labeled(defaults.overlap);
            let tally = TaskTally {
                is_labeled,
                useful: annotations
                    .iter()
                    .any(|a| !a.was_cancelled && !a.ground_truth),
            };
            delta = annotations
                .iter()
                .map(|a| CounterDelta::annotation(a.was_cancelled, a.ground_truth, 1))
                .fold(delta, CounterDelta::plus)
                .plus(CounterDelta::task(None, Some(tally)))
                .plus(CounterDelta::predictions(predictions.len() as i64));
            rows.push(TaskValues {
                inner_id,
                data: input.data,
                allow_skip: input.allow_skip,
                is_labeled,
                counters,
            });
            prepared.push(Prepared {
                annotations,
                predictions,
            });
        }

        let stamp = &stamp(at);
        let inner_ids: Vec<i64> = rows.iter().map(|task| task.inner_id).collect();
        let id_of_inner: HashMap<i64, i64> =
            Self::insert_task_rows(conn, project, defaults.overlap, rows, stamp, context)
                .await?
                .into_iter()
                .collect();
        let ids = inner_ids
            .iter()
            .map(|inner_id| {
                id_of_inner.get(inner_id).copied().ok_or_else(|| {
                    Error::backend(context, "a created task was not returned by the database")
                })
            })
            .collect::<Result<Vec<i64>>>()?;

        let annotations: Vec<(i64, &FileAnnotation)> = prepared
            .iter()
            .zip(&ids)
            .flat_map(|(task, id)| task.annotations.iter().map(move |a| (*id, a)))
            .collect();
        insert_values(
            conn,
            "INSERT INTO annotations (task_id, project_id, completed_by, result, \
             was_cancelled, ground_truth, lead_time, created_at, updated_at, updated_by) ",
            &annotations,
            10,
            |mut row, (task_id, annotation)| {
                row.push_bind(*task_id)
                    .push_bind(project)
                    .push_bind(defaults.creator)
                    .push_bind(annotation.result.as_str())
                    .push_bind(annotation.was_cancelled)
                    .push_bind(annotation.ground_truth)
                    .push_bind(annotation.lead_time)
                    .push_bind(stamp)
                    .push_bind(stamp)
                    .push_bind(defaults.creator);
            },
            context,
        )
        .await?;

        let predictions: Vec<(i64, &FilePrediction)> = prepared
            .iter()
            .zip(&ids)
            .flat_map(|(task, id)| task.predictions.iter().map(move |p| (*id, p)))
            .collect();
        insert_values(
            conn,
            "INSERT INTO predictions (task_id, project_id, result, score, model_version, \
             created_at, updated_at) ",
            &predictions,
            7,
            |mut row, (task_id, prediction)| {
                row.push_bind(*task_id)
                    .push_bind(project)
                    .push_bind(prediction.result.as_str())
                    .push_bind(prediction.score)
                    .push_bind(prediction.model_version.as_str())
                    .push_bind(stamp)
                    .push_bind(stamp);
            },
            context,
        )
        .await?;
        Self::bump_project(conn, project, delta, context).await?;
        Ok(ids)
    }

    /// The `(key, row_index)` pairs of `keys` already linked to the storage
    /// (row index `None` as -1, as the dedupe index has it).
    async fn linked_rows(
        conn: &mut DbConn,
        storage_id: i64,
        keys: &[&str],
        rows: (i64, i64),
        context: &str,
    ) -> Result<HashSet<(String, i64)>> {
        // The row range keeps a batch of a large streamed file from reading
        // every link of that file again.
        let mut linked = HashSet::new();
        for chunk in keys.chunks(LIST_CHUNK) {
            linked.extend(Self::linked_row_pairs(conn, storage_id, chunk, rows, context).await?);
        }
        Ok(linked)
    }
}

#[async_trait]
impl TaskSink for Engine {
    async fn linked_keys(&self, storage_id: i64, keys: &[String]) -> Result<HashMap<String, u64>> {
        let context = format!("looking up linked keys of storage {storage_id}");
        let mut conn = self.pool.acquire().await.map_err(db(context.as_str()))?;
        let mut linked = HashMap::new();
        for chunk in keys.chunks(LIST_CHUNK) {
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            for (key, tasks) in
                Self::linked_key_counts(&mut conn, storage_id, &chunk, &context).await?
            {
                linked.insert(key, u64::try_from(tasks).unwrap_or(0));
            }
        }
        Ok(linked)
    }

    async fn has_links(&self, storage_id: i64) -> Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM storage_links WHERE storage_id = $1)")
            .bind(storage_id)
            .fetch_one(&self.pool)
            .await
            .map_err(db(format!("looking for links of storage {storage_id}")))
    }

    async fn linked_since(&self, storage_id: i64, since: DateTime<Utc>) -> Result<Option<u64>> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM storage_links WHERE storage_id = $1 AND created_at >= $2",
        )
        .bind(storage_id)
        .bind(stamp(since))
        .fetch_one(&self.pool)
        .await
        .map_err(db(format!("counting the tasks of storage {storage_id}")))?;
        Ok(Some(u64::try_from(count).unwrap_or(0)))
    }

    async fn begin_object(&self, storage_id: i64, key: &str) -> Result<()> {
        self.mark_object(
            "INSERT INTO unfinished_objects (storage_id, key) VALUES ($1, $2)
             ON CONFLICT (storage_id, key) DO NOTHING",
            storage_id,
            key,
            "unfinished",
        )
        .await
    }

    async fn finish_object(&self, storage_id: i64, key: &str) -> Result<()> {
        self.mark_object(
            "DELETE FROM unfinished_objects WHERE storage_id = $1 AND key = $2",
            storage_id,
            key,
            "finished",
        )
        .await
    }

    async fn count_linked_rows(
        &self,
        storage_id: i64,
        key: &str,
        rows: std::ops::RangeInclusive<i64>,
    ) -> Result<u64> {
        // COALESCE: the dedupe index's expression, which serves this query.
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM storage_links WHERE storage_id = $1 AND key = $2
             AND COALESCE(row_index, -1) BETWEEN $3 AND $4",
        )
        .bind(storage_id)
        .bind(key)
        .bind(*rows.start())
        .bind(*rows.end())
        .fetch_one(&self.pool)
        .await
        .map_err(db(format!(
            "counting the linked rows of \"{key}\" in storage {storage_id}"
        )))?;
        Ok(u64::try_from(count).unwrap_or(0))
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
        let context = format!("creating tasks for storage {storage_id}");
        let mut tx = self.begin_write(&context).await?;
        let owner: Option<i64> =
            sqlx::query_scalar("SELECT project_id FROM storages WHERE id = $1")
                .bind(storage_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db(context.as_str()))?;
        if owner.is_none() {
            return Err(Error::not_found(format!("storage {storage_id}")));
        }
        // Before the dedupe check: a writer that held the project commits
        // before this one looks at the links.
        let defaults = Self::lock_project(&mut tx, project, &context).await?;

        let mut keys: Vec<&str> = tasks.iter().map(|task| task.link.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        let rows = tasks.iter().map(|task| task.link.row_index.unwrap_or(-1));
        let row_range = (rows.clone().min().unwrap_or(-1), rows.max().unwrap_or(-1));
        let mut linked = Self::linked_rows(&mut tx, storage_id, &keys, row_range, &context).await?;
        // Skip what is linked already, and repeats within the batch.
        let given = tasks.len();
        let (inputs, links): (Vec<TaskInput>, Vec<ObjectLink>) = tasks
            .into_iter()
            .filter(|task| {
                linked.insert((task.link.key.clone(), task.link.row_index.unwrap_or(-1)))
            })
            .map(TaskInput::of)
            .unzip();
        if inputs.is_empty() {
            tx.rollback().await.map_err(db(context.as_str()))?;
            return Ok(0);
        }

        let at = now();
        let ids = Self::insert_tasks(&mut tx, project, &defaults, inputs, at, &context).await?;
        let links: Vec<(i64, &ObjectLink)> = ids.iter().copied().zip(&links).collect();
        Self::insert_link_rows(&mut tx, storage_id, &links, &stamp(at), &context).await?;
        Self::record_tasks_event(&mut tx, project, Action::TasksCreated, &ids).await?;
        tx.commit().await.map_err(db(context.as_str()))?;
        tracing::debug!(
            storage_id,
            project,
            created = links.len(),
            skipped = given - links.len(),
            "created tasks"
        );
        Ok(links.len() as u64)
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

impl Engine {
    /// Runs `sql` on the object `key` of a storage (`$1`, `$2`): marking it
    /// unfinished while its tasks are being created, or finished.
    async fn mark_object(&self, sql: &str, storage_id: i64, key: &str, state: &str) -> Result<()> {
        sqlx::query(sql)
            .bind(storage_id)
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db(format!(
                "marking \"{key}\" of storage {storage_id} {state}"
            )))?;
        Ok(())
    }
}

/// Inserts `rows` with multi-row `VALUES` statements: `head` is the
/// `INSERT INTO table (columns) ` part, `push` binds the
/// `variables_per_row` values of one row. As many rows per statement as the
/// engine's limit of bound variables allows.
pub(super) async fn insert_values<'a, T>(
    conn: &mut DbConn,
    head: &str,
    rows: &'a [T],
    variables_per_row: usize,
    mut push: impl FnMut(Separated<'_, 'a, Db, &'static str>, &'a T) + Send,
    context: &str,
) -> Result<()>
where
    T: Sync,
{
    let mut rest = rows;
    for size in statement_sizes(
        rows.len(),
        rows_per_statement(MAX_VARIABLES, variables_per_row),
    ) {
        let (chunk, more) = rest.split_at(size);
        rest = more;
        let mut query = QueryBuilder::<Db>::new(head);
        query.push_values(chunk, &mut push);
        // Kept prepared: statement_sizes makes few shapes.
        query
            .build()
            .execute(&mut *conn)
            .await
            .map_err(db(context))?;
    }
    Ok(())
}
