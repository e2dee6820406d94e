//! Annotations for export syncs, read from Label Studio's `task_completion`
//! rows with their task and author, in the shape Label Studio's storage
//! export writes (`completed_by` expanded, `task` nested).
//!
//! This file is compiled twice, as a child module of each engine
//! (`sqlite::annotations`, `postgres::annotations`); `super` is the engine.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use sqlx::QueryBuilder;
use storage_core::export::created_ago;
use storage_core::label_config::LabelConfig;
use storage_core::persist::{AnnotationSource, ExportedAnnotation};
use storage_core::task_data::TaskData;
use storage_core::{Error, Result};

use super::rows::{execute, get, iso, json_column, push_in};
use super::{db, read_time, stamp, Db, DbRow, Engine};
use crate::catalogue::table_of;

/// A task's columns under `t`, as [`task_json`] reads them.
pub(super) const TASK_COLUMNS: &str = "\
     CAST(t.id AS BIGINT) AS t_id, CAST(t.data AS TEXT) AS t_data, \
     CAST(t.meta AS TEXT) AS t_meta, t.created_at AS t_created_at, \
     t.updated_at AS t_updated_at, t.is_labeled AS t_is_labeled, \
     t.allow_skip AS t_allow_skip, CAST(t.overlap AS BIGINT) AS t_overlap, \
     CAST(t.inner_id AS BIGINT) AS t_inner_id, \
     CAST(t.total_annotations AS BIGINT) AS t_total_annotations, \
     CAST(t.cancelled_annotations AS BIGINT) AS t_cancelled_annotations, \
     CAST(t.total_predictions AS BIGINT) AS t_total_predictions, \
     t.precomputed_agreement AS t_precomputed_agreement, \
     CAST(t.comment_count AS BIGINT) AS t_comment_count, \
     CAST(t.unresolved_comment_count AS BIGINT) AS t_unresolved_comment_count, \
     t.last_comment_updated_at AS t_last_comment_updated_at, \
     CAST(t.project_id AS BIGINT) AS t_project_id, \
     CAST(t.updated_by_id AS BIGINT) AS t_updated_by, \
     CAST(t.file_upload_id AS BIGINT) AS t_file_upload";

const ANNOTATION_COLUMNS: &str =
    "CAST(a.id AS BIGINT) AS a_id, CAST(a.result AS TEXT) AS a_result, \
     a.was_cancelled AS a_was_cancelled, a.ground_truth AS a_ground_truth, \
     a.created_at AS a_created_at, a.updated_at AS a_updated_at, \
     a.draft_created_at AS a_draft_created_at, a.lead_time AS a_lead_time, \
     CAST(a.import_id AS BIGINT) AS a_import_id, a.last_action AS a_last_action, \
     a.bulk_created AS a_bulk_created, CAST(a.project_id AS BIGINT) AS a_project_id, \
     CAST(a.updated_by_id AS BIGINT) AS a_updated_by, \
     CAST(a.parent_prediction_id AS BIGINT) AS a_parent_prediction, \
     CAST(a.parent_annotation_id AS BIGINT) AS a_parent_annotation, \
     CAST(a.last_created_by_id AS BIGINT) AS a_last_created_by, \
     CAST(u.id AS BIGINT) AS u_id, u.email AS u_email, u.first_name AS u_first_name, \
     u.last_name AS u_last_name";

const ANNOTATIONS_FROM: &str = "FROM task_completion a JOIN task t ON t.id = a.task_id \
     JOIN project p ON p.id = t.project_id \
     LEFT JOIN htx_user u ON u.id = a.completed_by_id";

/// A task of [`TASK_COLUMNS`] as Label Studio serializes every field of it
/// (its storage export's nested `task`, its webhooks' `tasks`), with
/// Files-mode data (`$undefined$`) shown under `data_key`.
pub(super) fn task_json(row: &DbRow, data_key: Option<&str>) -> Result<Value> {
    let id: i64 = get(row, "t_id")?;
    let data = get::<String>(row, "t_data")?;
    let data = TaskData::from_text(data)
        .map_err(|err| Error::backend(format!("decoding the data of task {id}"), err))?
        .shown(data_key);
    Ok(json!({
        "id": id,
        "data": Value::Object(data.to_object()),
        "meta": json_column(row, "t_meta")?,
        "created_at": iso(row, "t_created_at")?,
        "updated_at": iso(row, "t_updated_at")?,
        "is_labeled": get::<bool>(row, "t_is_labeled")?,
        "allow_skip": get::<Option<bool>>(row, "t_allow_skip")?,
        "overlap": get::<i64>(row, "t_overlap")?,
        "inner_id": get::<Option<i64>>(row, "t_inner_id")?,
        "total_annotations": get::<i64>(row, "t_total_annotations")?,
        "cancelled_annotations": get::<i64>(row, "t_cancelled_annotations")?,
        "total_predictions": get::<i64>(row, "t_total_predictions")?,
        "precomputed_agreement": get::<Option<f64>>(row, "t_precomputed_agreement")?,
        "comment_count": get::<i64>(row, "t_comment_count")?,
        "unresolved_comment_count": get::<i64>(row, "t_unresolved_comment_count")?,
        "last_comment_updated_at": iso(row, "t_last_comment_updated_at")?,
        "project": get::<Option<i64>>(row, "t_project_id")?,
        "updated_by": get::<Option<i64>>(row, "t_updated_by")?,
        "file_upload": get::<Option<i64>>(row, "t_file_upload")?,
        "comment_authors": [],
    }))
}

/// The export shape of one row of annotation, task and author; `data_key` is where
/// Files-mode data (`$undefined$`) is shown.
fn exported(row: &DbRow, data_key: Option<&str>, now: DateTime<Utc>) -> Result<ExportedAnnotation> {
    let id: i64 = get(row, "a_id")?;
    let project: i64 = get(row, "a_project_id")?;
    let task = task_json(row, data_key)?;
    let user = match get::<Option<i64>>(row, "u_id")? {
        Some(user) => Some((
            user,
            get::<String>(row, "u_email")?,
            get::<String>(row, "u_first_name")?,
            get::<String>(row, "u_last_name")?,
        )),
        None => None,
    };
    let created_at = read_time(row, "a_created_at", || "created_at".into())?.unwrap_or(now);
    let mut out = Map::new();
    out.insert("id".into(), json!(id));
    out.insert("result".into(), json_column(row, "a_result")?);
    out.insert(
        "created_username".into(),
        user.as_ref()
            .map_or(Value::Null, |(id, email, first, last)| {
                let full = format!("{first} {last}");
                Value::String(format!("{} {email}, {id}", full.trim()))
            }),
    );
    out.insert(
        "created_ago".into(),
        Value::String(created_ago(created_at, now)),
    );
    out.insert(
        "completed_by".into(),
        user.map_or(Value::Null, |(id, email, first_name, last_name)| {
            json!({"id": id, "first_name": first_name, "last_name": last_name, "email": email})
        }),
    );
    out.insert("task".into(), task);
    out.insert(
        "was_cancelled".into(),
        json!(get::<bool>(row, "a_was_cancelled")?),
    );
    out.insert(
        "ground_truth".into(),
        json!(get::<bool>(row, "a_ground_truth")?),
    );
    out.insert("created_at".into(), iso(row, "a_created_at")?);
    out.insert("updated_at".into(), iso(row, "a_updated_at")?);
    out.insert("draft_created_at".into(), iso(row, "a_draft_created_at")?);
    out.insert(
        "lead_time".into(),
        json!(get::<Option<f64>>(row, "a_lead_time")?),
    );
    out.insert(
        "import_id".into(),
        json!(get::<Option<i64>>(row, "a_import_id")?),
    );
    out.insert(
        "last_action".into(),
        json!(get::<Option<String>>(row, "a_last_action")?),
    );
    out.insert(
        "bulk_created".into(),
        json!(get::<Option<bool>>(row, "a_bulk_created")?),
    );
    out.insert("project".into(), json!(project));
    for (key, column) in [
        ("updated_by", "a_updated_by"),
        ("parent_prediction", "a_parent_prediction"),
        ("parent_annotation", "a_parent_annotation"),
        ("last_created_by", "a_last_created_by"),
    ] {
        out.insert(key.into(), json!(get::<Option<i64>>(row, column)?));
    }
    Ok(ExportedAnnotation {
        id,
        project,
        payload: Value::Object(out),
    })
}

impl Engine {
    async fn exported(
        &self,
        where_sql: &str,
        binds: &[i64],
        context: &str,
    ) -> Result<Vec<ExportedAnnotation>> {
        let sql = format!(
            "SELECT {ANNOTATION_COLUMNS}, {TASK_COLUMNS}, p.label_config AS p_label_config \
             {ANNOTATIONS_FROM} {where_sql}"
        );
        let mut query = sqlx::query(&sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db(context))?;
        let now = crate::now();
        // The rows of one page share their project: parse its config once.
        let mut data_keys: HashMap<String, Option<String>> = HashMap::new();
        rows.iter()
            .map(|row| {
                let config: Option<String> = get(row, "p_label_config")?;
                let key = data_keys
                    .entry(config.unwrap_or_default())
                    .or_insert_with_key(|config| {
                        LabelConfig::lenient(config)
                            .first_data_key()
                            .map(str::to_string)
                    });
                exported(row, key.as_deref(), now)
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
            &format!("reading annotations of Label Studio project {project} for export"),
        )
        .await
    }

    async fn count_annotations(&self, project: i64) -> Result<u64> {
        let counts: Vec<i64> =
            sqlx::query_scalar("SELECT COUNT(*) FROM task_completion WHERE project_id = $1")
                .bind(project)
                .fetch_all(&self.pool)
                .await
                .map_err(db(&format!(
                    "counting annotations of Label Studio project {project}"
                )))?;
        Ok(u64::try_from(counts.into_iter().sum::<i64>()).unwrap_or(0))
    }

    /// Label Studio's export link rows, as its `ExportStorageLink.create`
    /// keeps them: a new row per annotation, or `updated_at` renewed.
    async fn record_exported(&self, storage_id: i64, annotations: &[i64]) -> Result<()> {
        if annotations.is_empty() {
            return Ok(());
        }
        let Some((table, storage)) = table_of(storage_id) else {
            return Ok(());
        };
        let context = "writing Label Studio's export links";
        let at = &stamp(crate::now());
        let mut tx = self.begin_write(context).await?;
        let mut renewed =
            QueryBuilder::<Db>::new(format!("UPDATE {} SET updated_at = ", table.links));
        renewed
            .push_bind(at)
            .push(" WHERE object_exists = TRUE AND storage_id = ")
            .push_bind(storage)
            .push(" AND annotation_id");
        push_in(&mut renewed, annotations.iter().copied());
        renewed.push(" RETURNING CAST(annotation_id AS BIGINT)");
        let existing: Vec<i64> = renewed
            .build_query_scalar()
            .persistent(false)
            .fetch_all(&mut *tx)
            .await
            .map_err(db(context))?;
        let new: Vec<i64> = annotations
            .iter()
            .copied()
            .filter(|id| !existing.contains(id))
            .collect();
        if !new.is_empty() {
            let mut insert = QueryBuilder::<Db>::new(format!(
                "INSERT INTO {} (object_exists, created_at, updated_at, storage_id, annotation_id) ",
                table.links
            ));
            insert.push_values(new, |mut row, id| {
                row.push("TRUE")
                    .push_bind(at)
                    .push_bind(at)
                    .push_bind(storage)
                    .push_bind(id);
            });
            execute(&mut tx, insert, context).await?;
        }
        tx.commit().await.map_err(db(context))?;
        Ok(())
    }

    async fn annotation_for_export(&self, id: i64) -> Result<Option<ExportedAnnotation>> {
        Ok(self
            .exported(
                "WHERE a.id = $1",
                &[id],
                &format!("reading Label Studio annotation {id} for export"),
            )
            .await?
            .pop())
    }
}
