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
use storage_core::host::{HostStore, NewProject, Project, TaskPage, TaskRecord};
use storage_core::parse::ParsedTask;
use storage_core::persist::Caller;
use storage_core::{Error, Result};

use super::rows::{
    annotation_from_row, db, get, prediction_from_row, project_from_row, task_from_row,
};
use crate::shape::{now, to_text, AnnotationInput};
use crate::sql::TaskInput;
use crate::sql::{ANNOTATION_COLUMNS, ANNOTATION_FROM, TASK_COLUMNS};

// From the engine module: the engine, its database and row types, how it
// binds a time and a list, and its limit of values per list.
use super::{push_list, stamp, Db, DbRow, Engine, LIST_CHUNK};

impl Engine {
    async fn task_records(
        &self,
        where_sql: &str,
        binds: &[i64],
        context: &str,
    ) -> Result<Vec<TaskRecord>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS},
                 (SELECT l.key FROM storage_links l WHERE l.task_id = t.id ORDER BY l.id LIMIT 1)
                     AS storage_filename
             FROM tasks t {where_sql}"
        );
        let mut query = sqlx::query(&sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db(context))?;
        let mut tasks = Vec::with_capacity(rows.len());
        for row in &rows {
            let storage_filename: Option<String> = get(row, "storage_filename")?;
            tasks.push((task_from_row(row)?, storage_filename));
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
            .map(|(task, storage_filename)| TaskRecord {
                annotations: annotations.remove(&task.id).unwrap_or_default(),
                predictions: predictions.remove(&task.id).unwrap_or_default(),
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
                storage_filename,
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

    /// Tasks, annotations and predictions of a project.
    async fn project_counts(&self, project: i64) -> Result<(u64, u64, u64)> {
        // PostgreSQL sums BIGINTs as NUMERIC: cast back.
        let row = sqlx::query(
            "SELECT COUNT(*) AS tasks,
                    CAST(COALESCE(SUM(total_annotations), 0) AS BIGINT) AS annotations,
                    CAST(COALESCE(SUM(total_predictions), 0) AS BIGINT) AS predictions
             FROM tasks WHERE project_id = $1",
        )
        .bind(project)
        .fetch_one(&self.pool)
        .await
        .map_err(db(format!("counting the tasks of project {project}")))?;
        let count = |name: &str| -> Result<u64> {
            get::<i64>(&row, name).map(|n| u64::try_from(n).unwrap_or(0))
        };
        Ok((
            count("tasks")?,
            count("annotations")?,
            count("predictions")?,
        ))
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
        Ok(Project {
            id,
            organization: caller.organization_id,
            title: project.title,
            description: project.description,
            label_config: project.label_config,
            created_by: caller.user_id,
            created_at,
            task_number: 0,
            total_annotations_number: 0,
            total_predictions_number: 0,
        })
    }

    async fn project(&self, id: i64) -> Result<Option<Project>> {
        let row = sqlx::query(
            "SELECT id, organization_id, title, description, label_config, created_by, created_at
             FROM projects WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db(format!("reading project {id}")))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let counts = self.project_counts(id).await?;
        project_from_row(&row, counts).map(Some)
    }

    async fn import_tasks(&self, project: i64, tasks: Vec<ParsedTask>) -> Result<Vec<i64>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let context = format!("importing tasks into project {project}");
        let inputs: Vec<TaskInput<'_>> = tasks.iter().map(TaskInput::from).collect();
        let mut tx = self.begin_write(&context).await?;
        let defaults = Self::lock_project(&mut tx, project, &context).await?;
        let ids = Self::insert_tasks(&mut tx, project, &defaults, &inputs, now(), &context).await?;
        tx.commit().await.map_err(db(context.as_str()))?;
        Ok(ids)
    }

    async fn tasks(&self, project: i64, page: u64, page_size: u64) -> Result<TaskPage> {
        let (total, total_annotations, total_predictions) = self.project_counts(project).await?;
        let limit = i64::try_from(page_size).unwrap_or(i64::MAX);
        let offset = i64::try_from(page.max(1) - 1)
            .unwrap_or(i64::MAX)
            .saturating_mul(limit);
        let tasks = self
            .task_records(
                "WHERE t.project_id = $1 ORDER BY t.id LIMIT $2 OFFSET $3",
                &[project, limit, offset],
                &format!("listing tasks of project {project}"),
            )
            .await?;
        Ok(TaskPage {
            tasks,
            total,
            total_annotations,
            total_predictions,
        })
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
        let project: i64 = sqlx::query_scalar("SELECT project_id FROM tasks WHERE id = $1")
            .bind(task)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db(context.as_str()))?
            .ok_or_else(|| Error::not_found(format!("task {task}")))?;
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
        .bind(input.was_cancelled.unwrap_or(false))
        .bind(input.ground_truth.unwrap_or(false))
        .bind(input.lead_time.flatten())
        .bind(stamp(at))
        .fetch_one(&mut *tx)
        .await
        .map_err(db(context.as_str()))?;
        Self::refresh_task(&mut tx, task, Some(caller.user_id), at, &context).await?;
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
        let Some(current) = Self::annotation_row(&mut tx, id, &context).await? else {
            return Ok(None);
        };
        let at = now();
        sqlx::query(
            "UPDATE annotations SET result = $1, was_cancelled = $2, ground_truth = $3,
                                    lead_time = $4, updated_at = $5, updated_by = $6
             WHERE id = $7",
        )
        .bind(to_text(input.result.as_ref().unwrap_or(&current.result)))
        .bind(input.was_cancelled.unwrap_or(current.was_cancelled))
        .bind(input.ground_truth.unwrap_or(current.ground_truth))
        .bind(input.lead_time.unwrap_or(current.lead_time))
        .bind(stamp(at))
        .bind(caller.user_id)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db(context.as_str()))?;
        Self::refresh_task(&mut tx, current.task, Some(caller.user_id), at, &context).await?;
        let row = Self::annotation_row(&mut tx, id, &context).await?;
        tx.commit().await.map_err(db(context.as_str()))?;
        Ok(row.map(|row| row.api_json(now())))
    }

    async fn delete_annotation(&self, id: i64) -> Result<Option<i64>> {
        let context = format!("deleting annotation {id}");
        let mut tx = self.begin_write(&context).await?;
        let row =
            sqlx::query("DELETE FROM annotations WHERE id = $1 RETURNING task_id, project_id")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db(context.as_str()))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let task: i64 = get(&row, "task_id")?;
        let project: i64 = get(&row, "project_id")?;
        Self::refresh_task(&mut tx, task, None, now(), &context).await?;
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
