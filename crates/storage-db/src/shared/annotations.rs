//! Annotations in their export shape (`AnnotationSource`), and what every
//! change of an annotation does to its task's counters.
//!
//! This file is compiled twice, as a child module of each engine:
//! `sqlite::annotations` and `postgres::annotations` (the `#[path]` module declarations
//! at the end of `src/sqlite.rs` and `src/postgres.rs`). So `super` is the
//! engine module, and the `use super::{...}` lines below name everything
//! this file takes from it; every other name is an ordinary import.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use storage_core::persist::{AnnotationSource, ExportedAnnotation};
use storage_core::Result;

use super::rows::{annotation_from_row, db, get, task_from_row};
use crate::shape::{now, AnnotationRow};
use crate::sql::{ANNOTATION_COLUMNS, ANNOTATION_FROM, TASK_COLUMNS};

// From the engine module: the engine, its connection type, how it binds a
// time and the clause that locks a row.
use super::{stamp, DbConn, Engine, ROW_LOCK};

impl Engine {
    /// updated.
    pub(super) async fn refresh_task(
        conn: &mut DbConn,
        task_id: i64,
        by: Option<i64>,
        at: DateTime<Utc>,
        context: &str,
    ) -> Result<()> {
        // The counts below must see every annotation committed before this
        // transaction holds the task's row (concurrent annotators of one
        // task on PostgreSQL); SQLite has serialized the transaction already.
        sqlx::query(&format!("SELECT id FROM tasks WHERE id = $1{ROW_LOCK}"))
            .bind(task_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db(context))?;
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
        rows.iter()
            .map(|row| {
                let annotation = annotation_from_row(row)?;
                let mut task = task_from_row(row)?;
                let label_config: String = get(row, "project_label_config")?;
                task.data = storage_core::host::shown_data(task.data, &label_config);
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
