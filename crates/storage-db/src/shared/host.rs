//! The example host (`HostStore`): projects, tasks with their annotations
//! and predictions, and the annotation API.
//!
//! This file is compiled twice, as a child module of each engine:
//! `sqlite::host` and `postgres::host` (the `#[path]` module declarations
//! at the end of `src/sqlite.rs` and `src/postgres.rs`). So `super` is the
//! engine module, and the `use super::{...}` lines below name everything
//! this file takes from it; every other name is an ordinary import.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::QueryBuilder;
use storage_core::host::{
    HostStore, NewProject, Project, ProjectPage, Queue, TaskRecord, TaskSize, UserRecord,
};
use storage_core::parse::ParsedTask;
use storage_core::persist::Caller;
use storage_core::webhooks::{recorded, Action};
use storage_core::{Error, Result};

use super::rows::{
    annotation_from_row, db, get, prediction_from_row, project_from_row, task_from_row,
    user_from_row,
};
use crate::shape::{now, to_text, AnnotationInput, CounterDelta, TaskRow};
use crate::sql::TaskInput;
use crate::sql::{ANNOTATION_COLUMNS, ANNOTATION_FROM, PROJECT_SELECT, TASK_COLUMNS};

// From the engine module: the engine, its database and row types, how it
// binds a time and a list, and its limit of values per list.
use super::{push_list, stamp, Db, DbConn, DbRow, Engine, LIST_CHUNK};

/// `LIMIT` and `OFFSET` of a 1-based page.
fn limit_offset(page: u64, page_size: u64) -> (i64, i64) {
    let limit = i64::try_from(page_size).unwrap_or(i64::MAX);
    let offset = i64::try_from(page.max(1) - 1)
        .unwrap_or(i64::MAX)
        .saturating_mul(limit);
    (limit, offset)
}

/// A task row as a record without annotations, predictions or link.
fn task_record(task: TaskRow) -> TaskRecord {
    TaskRecord {
        id: task.id,
        project: task.project,
        inner_id: task.inner_id,
        data: task.data,
        meta: task.meta,
        created_at: task.created_at,
        updated_at: task.updated_at,
        is_labeled: task.is_labeled,
        overlap: task.overlap,
        allow_skip: task.allow_skip,
        total_annotations: task.total_annotations,
        cancelled_annotations: task.cancelled_annotations,
        total_predictions: task.total_predictions,
        storage_filename: None,
        storage_object_exists: None,
        annotations: Vec::new(),
        predictions: Vec::new(),
    }
}

impl Engine {
    /// The task of annotation `id`.
    async fn annotation_task(conn: &mut DbConn, id: i64, context: &str) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT task_id FROM annotations WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db(context))
    }

    async fn task_records(
        &self,
        where_sql: &str,
        binds: &[i64],
        context: &str,
    ) -> Result<Vec<TaskRecord>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS},
                 (SELECT l.key FROM storage_links l WHERE l.task_id = t.id ORDER BY l.id LIMIT 1)
                     AS storage_filename,
                 (SELECT l.object_exists FROM storage_links l WHERE l.task_id = t.id
                  ORDER BY l.id LIMIT 1) AS storage_object_exists
             FROM tasks t {where_sql}"
        );
        let mut query = sqlx::query(&sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db(context))?;
        let mut tasks = Vec::with_capacity(rows.len());
        for row in &rows {
            let link: (Option<String>, Option<bool>) = (
                get(row, "storage_filename")?,
                get(row, "storage_object_exists")?,
            );
            tasks.push((task_from_row(row)?, link));
        }
        let ids: Vec<i64> = tasks.iter().map(|(task, _)| task.id).collect();
        let at = now();
        let mut annotations = self
            .values_by_task(
                &format!("SELECT {ANNOTATION_COLUMNS} {ANNOTATION_FROM} WHERE a.task_id"),
                " ORDER BY a.id",
                &ids,
                |row| annotation_from_row(row).map(|a| (a.task, a.api_json(at))),
                context,
            )
            .await?;
        let mut predictions = self
            .values_by_task(
                "SELECT id, task_id, project_id, result, score, model_version, created_at, \
                 updated_at FROM predictions WHERE task_id",
                " ORDER BY id",
                &ids,
                |row| prediction_from_row(row).map(|p| (p.task, p.api_json(at))),
                context,
            )
            .await?;
        Ok(tasks
            .into_iter()
            .map(|(task, (storage_filename, storage_object_exists))| {
                let id = task.id;
                let mut record = task_record(task);
                record.annotations = annotations.remove(&id).unwrap_or_default();
                record.predictions = predictions.remove(&id).unwrap_or_default();
                record.storage_filename = storage_filename;
                record.storage_object_exists = storage_object_exists;
                record
            })
            .collect())
    }

    /// What `select` (ending in a task id column) finds for the tasks
    /// `ids`, a list of ids at a time, in `order`: rows decoded to
    /// `(task id, JSON)` and grouped by task.
    async fn values_by_task(
        &self,
        select: &str,
        order: &str,
        ids: &[i64],
        decode: impl Fn(&DbRow) -> Result<(i64, Value)> + Send,
        context: &str,
    ) -> Result<HashMap<i64, Vec<Value>>> {
        let mut by_task: HashMap<i64, Vec<Value>> = HashMap::new();
        for chunk in ids.chunks(LIST_CHUNK) {
            let mut query = QueryBuilder::<Db>::new(select);
            push_list(&mut query, chunk.to_vec());
            query.push(order);
            let rows = query
                .build()
                .persistent(false)
                .fetch_all(&self.pool)
                .await
                .map_err(db(context))?;
            for row in &rows {
                let (task, value) = decode(row)?;
                by_task.entry(task).or_default().push(value);
            }
        }
        Ok(by_task)
    }
}

#[async_trait]
impl HostStore for Engine {
    async fn create_project(&self, caller: &Caller, project: NewProject) -> Result<Project> {
        let created_at = now();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO projects (organization_id, title, description, label_config, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(caller.organization_id)
        .bind(&project.title)
        .bind(&project.description)
        .bind(&project.label_config)
        .bind(caller.user_id)
        .bind(stamp(created_at))
        .fetch_one(&self.pool)
        .await
        .map_err(db(format!("creating a project for user {}", caller.user_id)))?;
        self.project(id).await?.ok_or_else(|| {
            Error::backend(
                format!("creating a project for user {}", caller.user_id),
                "the created project was not found",
            )
        })
    }

    async fn project(&self, id: i64) -> Result<Option<Project>> {
        let row = sqlx::query(&format!("{PROJECT_SELECT} WHERE p.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db(format!("reading project {id}")))?;
        row.as_ref().map(project_from_row).transpose()
    }

    async fn projects(&self, organization: i64, page: u64, page_size: u64) -> Result<ProjectPage> {
        let context = format!("listing the projects of organization {organization}");
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM projects WHERE organization_id = $1")
                .bind(organization)
                .fetch_one(&self.pool)
                .await
                .map_err(db(context.as_str()))?;
        let (limit, offset) = limit_offset(page, page_size);
        let rows = sqlx::query(&format!(
            "{PROJECT_SELECT} WHERE p.organization_id = $1 ORDER BY p.id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(organization)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await
        .map_err(db(context.as_str()))?;
        Ok(ProjectPage {
            projects: rows.iter().map(project_from_row).collect::<Result<_>>()?,
            count: u64::try_from(count).unwrap_or(0),
        })
    }

    async fn queue(&self, project: i64, user: i64) -> Result<Queue> {
        let context = format!("counting the queue of user {user} in project {project}");
        // Only the caller's annotations are read (through their index);
        // the project's other counts come from its row.
        let row = sqlx::query(
            "SELECT p.task_number - p.finished_task_number AS open,
                    (SELECT COUNT(DISTINCT a.task_id) FROM annotations a
                     WHERE a.project_id = p.id AND a.completed_by = $2) AS done,
                    (SELECT COUNT(DISTINCT a.task_id) FROM annotations a
                     JOIN tasks t ON t.id = a.task_id
                     WHERE a.project_id = p.id AND a.completed_by = $2 AND NOT t.is_labeled)
                        AS open_done
             FROM projects p WHERE p.id = $1",
        )
        .bind(project)
        .bind(user)
        .fetch_optional(&self.pool)
        .await
        .map_err(db(context.as_str()))?;
        let Some(row) = row else {
            return Ok(Queue::default());
        };
        let open: i64 = get(&row, "open")?;
        let done: i64 = get(&row, "done")?;
        let open_done: i64 = get(&row, "open_done")?;
        Ok(Queue {
            total: u64::try_from(open - open_done + done).unwrap_or(0),
            done: u64::try_from(done).unwrap_or(0),
        })
    }

    async fn user(&self, id: i64) -> Result<Option<UserRecord>> {
        let row = sqlx::query(
            "SELECT id, email, first_name, last_name, organization_id, created_at
             FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db(format!("reading user {id}")))?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn annotation(&self, id: i64) -> Result<Option<Value>> {
        let context = format!("reading annotation {id}");
        let mut conn = self.pool.acquire().await.map_err(db(context.as_str()))?;
        Ok(Self::annotation_row(&mut conn, id, &context)
            .await?
            .map(|row| row.api_json(now())))
    }

    async fn import_tasks(&self, project: i64, tasks: Vec<ParsedTask>) -> Result<Vec<i64>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let context = format!("importing tasks into project {project}");
        let inputs: Vec<TaskInput> = tasks.into_iter().map(TaskInput::from).collect();
        let mut tx = self.begin_write(&context).await?;
        let defaults = Self::lock_project(&mut tx, project, &context).await?;
        let ids = Self::insert_tasks(&mut tx, project, &defaults, inputs, now(), &context).await?;
        Self::record_tasks_event(&mut tx, project, Action::TasksCreated, &ids).await?;
        tx.commit().await.map_err(db(context.as_str()))?;
        Ok(ids)
    }

    async fn task_page(&self, project: i64, page: u64, page_size: u64) -> Result<Vec<TaskSize>> {
        let (limit, offset) = limit_offset(page, page_size);
        // By id, as Label Studio lists them. Within a project `inner_id`
        // grows with `id` (both are given under the project's lock), and
        // ordering by it walks the (project_id, inner_id) index instead of
        // sorting every task of the project for each page.
        let rows = sqlx::query(
            "SELECT t.id, CAST(octet_length(t.data) AS BIGINT) AS data_bytes FROM tasks t
             WHERE t.project_id = $1 ORDER BY t.inner_id LIMIT $2 OFFSET $3",
        )
        .bind(project)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await
        .map_err(db(format!("listing tasks of project {project}")))?;
        rows.iter()
            .map(|row| {
                Ok(TaskSize {
                    id: get(row, "id")?,
                    data_bytes: u64::try_from(get::<i64>(row, "data_bytes")?).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn tasks_by_id(&self, ids: &[i64]) -> Result<Vec<TaskRecord>> {
        let context = format!("reading {} tasks", ids.len());
        let mut by_id = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(LIST_CHUNK) {
            let placeholders = (1..=chunk.len())
                .map(|n| format!("${n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let found = self
                .task_records(&format!("WHERE t.id IN ({placeholders})"), chunk, &context)
                .await?;
            by_id.extend(found.into_iter().map(|task| (task.id, task)));
        }
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    async fn bare_tasks(&self, ids: &[i64]) -> Result<Vec<TaskRecord>> {
        let context = format!("reading {} tasks", ids.len());
        let mut by_id = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(LIST_CHUNK) {
            let mut query =
                QueryBuilder::<Db>::new(format!("SELECT {TASK_COLUMNS} FROM tasks t WHERE t.id"));
            push_list(&mut query, chunk.to_vec());
            let rows = query
                .build()
                .persistent(false)
                .fetch_all(&self.pool)
                .await
                .map_err(db(context.as_str()))?;
            for row in &rows {
                let task = task_record(task_from_row(row)?);
                by_id.insert(task.id, task);
            }
        }
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    async fn task(&self, id: i64) -> Result<Option<TaskRecord>> {
        Ok(self
            .task_records("WHERE t.id = $1", &[id], &format!("reading task {id}"))
            .await?
            .pop())
    }

    async fn create_annotation(
        &self,
        caller: &Caller,
        task: i64,
        body: &Map<String, Value>,
    ) -> Result<Value> {
        let input = AnnotationInput::from_body(body, true)?;
        let context = format!("creating an annotation of task {task}");
        let mut tx = self.begin_write(&context).await?;
        let (project, before) = Self::lock_task(&mut tx, task, &context)
            .await?
            .ok_or_else(|| Error::not_found(format!("task {task}")))?;
        let (was_cancelled, ground_truth) = (
            input.was_cancelled.unwrap_or(false),
            input.ground_truth.unwrap_or(false),
        );
        let at = now();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO annotations (task_id, project_id, completed_by, result, was_cancelled,
                                      ground_truth, lead_time, created_at, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $3) RETURNING id",
        )
        .bind(task)
        .bind(project)
        .bind(caller.user_id)
        .bind(to_text(
            input.result.as_ref().unwrap_or(&Value::Array(Vec::new())),
        ))
        .bind(was_cancelled)
        .bind(ground_truth)
        .bind(input.lead_time.flatten())
        .bind(stamp(at))
        .fetch_one(&mut *tx)
        .await
        .map_err(db(context.as_str()))?;
        let after = Self::refresh_task(&mut tx, task, Some(caller.user_id), at, &context).await?;
        let delta = CounterDelta::annotation(was_cancelled, ground_truth, 1)
            .plus(CounterDelta::task(Some(before), Some(after)));
        Self::bump_project(&mut tx, project, delta, &context).await?;
        let payload = recorded::annotation(id, task);
        Self::record_event(&mut tx, project, Action::AnnotationCreated, &payload).await?;
        Self::record_exports(&mut tx, project, id, false).await?;
        let row = Self::annotation_row(&mut tx, id, &context)
            .await?
            .ok_or_else(|| {
                Error::backend(context.as_str(), "the created annotation was not found")
            })?;
        tx.commit().await.map_err(db(context.as_str()))?;
        Ok(row.api_json(now()))
    }

    async fn update_annotation(
        &self,
        caller: &Caller,
        id: i64,
        body: &Map<String, Value>,
    ) -> Result<Option<Value>> {
        let input = AnnotationInput::from_body(body, false)?;
        let context = format!("updating annotation {id}");
        let mut tx = self.begin_write(&context).await?;
        let Some(task) = Self::annotation_task(&mut tx, id, &context).await? else {
            return Ok(None);
        };
        let Some((project, before)) = Self::lock_task(&mut tx, task, &context).await? else {
            return Ok(None);
        };
        // Read again under the task's lock: what the counters subtract.
        let Some(current) = Self::annotation_row(&mut tx, id, &context).await? else {
            return Ok(None);
        };
        let was_cancelled = input.was_cancelled.unwrap_or(current.was_cancelled);
        let ground_truth = input.ground_truth.unwrap_or(current.ground_truth);
        let at = now();
        sqlx::query(
            "UPDATE annotations SET result = $1, was_cancelled = $2, ground_truth = $3,
                                    lead_time = $4, updated_at = $5, updated_by = $6
             WHERE id = $7",
        )
        .bind(to_text(input.result.as_ref().unwrap_or(&current.result)))
        .bind(was_cancelled)
        .bind(ground_truth)
        .bind(input.lead_time.unwrap_or(current.lead_time))
        .bind(stamp(at))
        .bind(caller.user_id)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db(context.as_str()))?;
        let after =
            Self::refresh_task(&mut tx, current.task, Some(caller.user_id), at, &context).await?;
        let delta = CounterDelta::annotation(current.was_cancelled, current.ground_truth, -1)
            .plus(CounterDelta::annotation(was_cancelled, ground_truth, 1))
            .plus(CounterDelta::task(Some(before), Some(after)));
        Self::bump_project(&mut tx, project, delta, &context).await?;
        let payload = recorded::annotation(id, current.task);
        Self::record_event(&mut tx, project, Action::AnnotationUpdated, &payload).await?;
        Self::record_exports(&mut tx, project, id, false).await?;
        let row = Self::annotation_row(&mut tx, id, &context).await?;
        tx.commit().await.map_err(db(context.as_str()))?;
        Ok(row.map(|row| row.api_json(now())))
    }

    async fn delete_annotation(&self, id: i64) -> Result<Option<i64>> {
        let context = format!("deleting annotation {id}");
        let mut tx = self.begin_write(&context).await?;
        let Some(task) = Self::annotation_task(&mut tx, id, &context).await? else {
            return Ok(None);
        };
        let Some((project, before)) = Self::lock_task(&mut tx, task, &context).await? else {
            return Ok(None);
        };
        let row = sqlx::query(
            "DELETE FROM annotations WHERE id = $1 RETURNING was_cancelled, ground_truth",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db(context.as_str()))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let after = Self::refresh_task(&mut tx, task, None, now(), &context).await?;
        let delta =
            CounterDelta::annotation(get(&row, "was_cancelled")?, get(&row, "ground_truth")?, -1)
                .plus(CounterDelta::task(Some(before), Some(after)));
        Self::bump_project(&mut tx, project, delta, &context).await?;
        let payload = recorded::annotations(&[id]);
        Self::record_event(&mut tx, project, Action::AnnotationsDeleted, &payload).await?;
        Self::record_exports(&mut tx, project, id, true).await?;
        tx.commit().await.map_err(db(context.as_str()))?;
        Ok(Some(project))
    }

    async fn annotation_project(&self, id: i64) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT project_id FROM annotations WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db(format!("reading annotation {id}")))
    }
}
