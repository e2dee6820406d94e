//! Annotations in their export shape (`AnnotationSource`), and what every
//! change of an annotation does to its task's and its project's counters.
//!
//! This file is compiled twice, as a child module of each engine:
//! `sqlite::annotations` and `postgres::annotations` (the `#[path]` module declarations
//! at the end of `src/sqlite.rs` and `src/postgres.rs`). So `super` is the
//! engine module, and the `use super::{...}` lines below name everything
//! this file takes from it; every other name is an ordinary import.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use storage_core::label_config::LabelConfig;
use storage_core::persist::{AnnotationSource, ExportedAnnotation};
use storage_core::Result;

use super::rows::{annotation_from_row, db, get, task_from_row};
use crate::shape::{now, AnnotationRow, CounterDelta, TaskTally, COUNTER_COLUMNS};
use crate::sql::{ANNOTATION_COLUMNS, ANNOTATION_FROM, TASK_COLUMNS};

// From the engine module: the engine, its connection type, how it binds a
// time and the clause that locks a row.
use super::{stamp, DbConn, Engine, ROW_LOCK};

impl Engine {
    /// Locks the row of task `task_id` until the transaction ends and
    /// reads its project and what the project counters count of it. Every
    /// writer of a task's annotations calls this first, so what it reads
    /// stays true until it commits.
    pub(super) async fn lock_task(
        conn: &mut DbConn,
        task_id: i64,
        context: &str,
    ) -> Result<Option<(i64, TaskTally)>> {
        // The lock and the read are two statements: on PostgreSQL a
        // statement that waited for the lock still reads with the snapshot
        // it started with, which may lack another annotator's commit.
        let project: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT project_id FROM tasks WHERE id = $1{ROW_LOCK}"
        ))
        .bind(task_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db(context))?;
        let Some(project) = project else {
            return Ok(None);
        };
        let tally = Self::task_tally(conn, task_id, context).await?;
        Ok(Some((project, tally)))
    }

    async fn task_tally(conn: &mut DbConn, task_id: i64, context: &str) -> Result<TaskTally> {
        let row = sqlx::query(
            "SELECT t.is_labeled,
                    EXISTS (SELECT 1 FROM annotations a WHERE a.task_id = t.id
                            AND NOT a.was_cancelled AND NOT a.ground_truth) AS useful
             FROM tasks t WHERE t.id = $1",
        )
        .bind(task_id)
        .fetch_one(&mut *conn)
        .await
        .map_err(db(context))?;
        Ok(TaskTally {
            is_labeled: get(&row, "is_labeled")?,
            useful: get(&row, "useful")?,
        })
    }

    /// Recounts the annotations of a task (after [`Engine::lock_task`]),
    /// marks it updated, and returns what the project counters now count
    /// of it.
    pub(super) async fn refresh_task(
        conn: &mut DbConn,
        task_id: i64,
        by: Option<i64>,
        at: DateTime<Utc>,
        context: &str,
    ) -> Result<TaskTally> {
        sqlx::query(
            "UPDATE tasks SET
                 total_annotations = (SELECT COUNT(*) FROM annotations a
                                      WHERE a.task_id = tasks.id AND NOT a.was_cancelled),
                 cancelled_annotations = (SELECT COUNT(*) FROM annotations a
                                          WHERE a.task_id = tasks.id AND a.was_cancelled),
                 is_labeled = ((SELECT COUNT(*) FROM annotations a
                                WHERE a.task_id = tasks.id AND NOT a.was_cancelled)
                               >= CASE WHEN overlap > 1 THEN overlap ELSE 1 END),
                 updated_at = $2,
                 updated_by = COALESCE($3, updated_by)
             WHERE id = $1",
        )
        .bind(task_id)
        .bind(stamp(at))
        .bind(by)
        .execute(&mut *conn)
        .await
        .map_err(db(context))?;
        Self::task_tally(conn, task_id, context).await
    }

    /// Adds `delta` to the counters of `project`, in the transaction of
    /// the change it counts.
    pub(super) async fn bump_project(
        conn: &mut DbConn,
        project: i64,
        delta: CounterDelta,
        context: &str,
    ) -> Result<()> {
        if delta.is_zero() {
            return Ok(());
        }
        let sets: Vec<String> = COUNTER_COLUMNS
            .iter()
            .enumerate()
            .map(|(i, column)| format!("{column} = {column} + ${}", i + 1))
            .collect();
        let sql = format!(
            "UPDATE projects SET {} WHERE id = ${}",
            sets.join(", "),
            COUNTER_COLUMNS.len() + 1
        );
        let mut query = sqlx::query(&sql);
        for change in delta.0 {
            query = query.bind(change);
        }
        query
            .bind(project)
            .execute(&mut *conn)
            .await
            .map_err(db(context))?;
        Ok(())
    }

    pub(super) async fn annotation_row(
        conn: &mut DbConn,
        id: i64,
        context: &str,
    ) -> Result<Option<AnnotationRow>> {
        let sql = format!("SELECT {ANNOTATION_COLUMNS} {ANNOTATION_FROM} WHERE a.id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db(context))?;
        row.as_ref().map(annotation_from_row).transpose()
    }

    async fn exported(
        &self,
        where_sql: &str,
        binds: &[i64],
        context: &str,
    ) -> Result<Vec<ExportedAnnotation>> {
        let sql = format!(
            "SELECT {ANNOTATION_COLUMNS}, {TASK_COLUMNS}, p.label_config AS project_label_config
             FROM annotations a
             JOIN tasks t ON t.id = a.task_id
             JOIN projects p ON p.id = t.project_id
             LEFT JOIN users u ON u.id = a.completed_by
             {where_sql}"
        );
        let mut query = sqlx::query(&sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db(context))?;
        let at = now();
        // The rows of one page share their project: parse its config once.
        let mut data_keys: HashMap<String, Option<String>> = HashMap::new();
        rows.iter()
            .map(|row| {
                let annotation = annotation_from_row(row)?;
                let mut task = task_from_row(row)?;
                let label_config: String = get(row, "project_label_config")?;
                let key = data_keys.entry(label_config).or_insert_with_key(|config| {
                    LabelConfig::lenient(config)
                        .first_data_key()
                        .map(str::to_string)
                });
                task.data = task.data.shown(key.as_deref());
                Ok(ExportedAnnotation {
                    id: annotation.id,
                    project: annotation.project,
                    payload: annotation.export_json(&task, at),
                })
            })
            .collect()
    }
}

#[async_trait]
impl AnnotationSource for Engine {
    async fn annotations_for_export(
        &self,
        project: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<ExportedAnnotation>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.exported(
            "WHERE a.project_id = $1 AND a.id > $2 ORDER BY a.id LIMIT $3",
            &[project, after_id, limit],
            &format!("reading annotations of project {project} for export"),
        )
        .await
    }

    async fn count_annotations(&self, project: i64) -> Result<u64> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM annotations WHERE project_id = $1")
                .bind(project)
                .fetch_one(&self.pool)
                .await
                .map_err(db(format!("counting annotations of project {project}")))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn annotation_for_export(&self, id: i64) -> Result<Option<ExportedAnnotation>> {
        Ok(self
            .exported(
                "WHERE a.id = $1",
                &[id],
                &format!("reading annotation {id} for export"),
            )
            .await?
            .pop())
    }
}
