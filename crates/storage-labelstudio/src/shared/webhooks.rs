//! Label Studio's `TASKS_CREATED` and `TASKS_DELETED` webhooks for the
//! tasks a sync creates and deletes: its own `webhook` rows (the
//! organisation's, and the project's), with the body its
//! `emit_webhooks_for_instance` posts (`action`, and with `send_payload`
//! the `tasks` and the `project` as its webhook serializers write them)
//! and each webhook's headers.
//!
//! This file is compiled twice, as a child module of each engine
//! (`sqlite::webhooks`, `postgres::webhooks`); `super` is the engine.

use serde_json::{Map, Value};
use sqlx::QueryBuilder;
use storage_core::label_config::LabelConfig;
use storage_core::Result;

use super::annotations::{task_json, TASK_COLUMNS};
use super::rows::{get, iso, json_column, push_in};
use super::{db, Db, DbRow, Engine};
use crate::webhooks::{Column, Delivery, PROJECT_FIELDS};

/// What happened to the tasks a webhook tells of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TaskEvent {
    /// `TASKS_CREATED`: the tasks as Label Studio's task serializer
    /// writes them.
    Created,
    /// `TASKS_DELETED`: their ids only (`OnlyIDWebhookSerializer`).
    Deleted,
}

impl TaskEvent {
    fn action(self) -> &'static str {
        match self {
            Self::Created => "TASKS_CREATED",
            Self::Deleted => "TASKS_DELETED",
        }
    }
}

impl Engine {
    /// Posts `event` for the tasks `ids` of `project` to the project's
    /// active webhooks, in the background: the sync does not wait for
    /// receivers. A failure is logged, never raised.
    pub(super) fn emit_tasks(&self, event: TaskEvent, project: i64, ids: Vec<i64>) {
        let Some(sender) = self.webhooks.clone() else {
            return;
        };
        if ids.is_empty() {
            return;
        }
        let engine = self.clone();
        tokio::spawn(async move {
            match engine.task_deliveries(event, project, &ids).await {
                Ok(deliveries) => sender.send_all(deliveries).await,
                Err(err) => tracing::warn!(
                    project,
                    action = event.action(),
                    error = %err,
                    "reading Label Studio's webhooks failed; not sent"
                ),
            }
        });
    }

    /// The deliveries of `event` for `ids`: one per active webhook.
    async fn task_deliveries(
        &self,
        event: TaskEvent,
        project: i64,
        ids: &[i64],
    ) -> Result<Vec<Delivery>> {
        let context = "reading Label Studio's webhooks";
        let hooks = sqlx::query(
            "SELECT CAST(w.url AS TEXT) AS url, CAST(w.headers AS TEXT) AS headers, \
             w.send_payload AS send_payload \
             FROM webhook w JOIN project p ON p.organization_id = w.organization_id \
             WHERE p.id = $1 AND (w.project_id = $1 OR w.project_id IS NULL) AND w.is_active \
             AND (w.send_for_all_actions OR EXISTS (SELECT 1 FROM webhook_action a \
                  WHERE a.webhook_id = w.id AND a.action = $2)) \
             ORDER BY w.id",
        )
        .bind(project)
        .bind(event.action())
        .fetch_all(&self.pool)
        .await
        .map_err(db(context))?;
        if hooks.is_empty() {
            return Ok(Vec::new());
        }
        let mut payload = None;
        let mut deliveries = Vec::with_capacity(hooks.len());
        for hook in &hooks {
            let send_payload: bool = get(hook, "send_payload")?;
            let mut body = Map::new();
            body.insert("action".into(), Value::from(event.action()));
            if send_payload {
                if payload.is_none() {
                    payload = Some(self.tasks_payload(event, project, ids).await?);
                }
                if let Some(payload) = &payload {
                    body.extend(payload.clone());
                }
            }
            let headers = match json_column(hook, "headers")? {
                Value::Object(headers) => headers,
                _ => Map::new(),
            };
            deliveries.push(Delivery {
                url: get(hook, "url")?,
                headers,
                body: Value::Object(body),
            });
        }
        Ok(deliveries)
    }

    /// `{"tasks": [...], "project": {...}}` as Label Studio's webhook
    /// serializers write them.
    async fn tasks_payload(
        &self,
        event: TaskEvent,
        project: i64,
        ids: &[i64],
    ) -> Result<Map<String, Value>> {
        let project_row = self.project_row(project).await?;
        let tasks = match event {
            TaskEvent::Created => self.tasks_json(&project_row, ids).await?,
            TaskEvent::Deleted => ids
                .iter()
                .map(|id| serde_json::json!({ "id": id }))
                .collect(),
        };
        let mut payload = Map::new();
        payload.insert("tasks".into(), Value::Array(tasks));
        payload.insert("project".into(), project_json(&project_row)?);
        Ok(payload)
    }

    /// The tasks `ids` as Label Studio's webhook task serializer writes
    /// them.
    async fn tasks_json(&self, project_row: &DbRow, ids: &[i64]) -> Result<Vec<Value>> {
        let config: Option<String> = get(project_row, "p_label_config")?;
        let data_key = LabelConfig::lenient(config.as_deref().unwrap_or_default())
            .first_data_key()
            .map(str::to_string);
        let mut query =
            QueryBuilder::<Db>::new(format!("SELECT {TASK_COLUMNS} FROM task t WHERE t.id"));
        push_in(&mut query, ids.iter().copied());
        query.push(" ORDER BY t.id");
        let rows = query
            .build()
            .persistent(false)
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading the tasks of a TASKS_CREATED webhook"))?;
        rows.iter()
            .map(|row| task_json(row, data_key.as_deref()))
            .collect()
    }

    /// The project's row with the counts Label Studio's webhook serializer
    /// adds (`Project.objects.with_counts()`).
    async fn project_row(&self, project: i64) -> Result<DbRow> {
        let mut sql = String::from(
            "SELECT CAST(p.id AS BIGINT) AS id, \
             (SELECT COUNT(*) FROM task t WHERE t.project_id = p.id) AS task_number, \
             (SELECT COUNT(*) FROM task t WHERE t.project_id = p.id AND t.is_labeled) \
                AS finished_task_number, \
             (SELECT COUNT(*) FROM prediction r JOIN task t ON t.id = r.task_id \
                WHERE t.project_id = p.id) AS total_predictions_number, \
             (SELECT COUNT(*) FROM task_completion a JOIN task t ON t.id = a.task_id \
                WHERE t.project_id = p.id AND NOT a.was_cancelled) AS total_annotations_number, \
             (SELECT COUNT(DISTINCT a.task_id) FROM task_completion a \
                JOIN task t ON t.id = a.task_id WHERE t.project_id = p.id \
                AND NOT a.was_cancelled) AS num_tasks_with_annotations, \
             (SELECT COUNT(*) FROM task_completion a JOIN task t ON t.id = a.task_id \
                WHERE t.project_id = p.id AND NOT a.was_cancelled AND NOT a.ground_truth \
                AND a.result IS NOT NULL) AS useful_annotation_number, \
             (SELECT COUNT(*) FROM task_completion a JOIN task t ON t.id = a.task_id \
                WHERE t.project_id = p.id AND a.ground_truth) AS ground_truth_number, \
             (SELECT COUNT(*) FROM task_completion a JOIN task t ON t.id = a.task_id \
                WHERE t.project_id = p.id AND a.was_cancelled) AS skipped_annotations_number",
        );
        for (key, column, kind) in PROJECT_FIELDS {
            let column = match kind {
                Column::Int => format!("CAST(p.{column} AS BIGINT)"),
                Column::Json | Column::Text => format!("CAST(p.{column} AS TEXT)"),
                Column::Bool | Column::Time => format!("p.{column}"),
                Column::Withheld => "NULL".to_string(),
            };
            sql.push_str(&format!(", {column} AS p_{key}"));
        }
        sql.push_str(" FROM project p WHERE p.id = $1");
        let rows = sqlx::query(&sql)
            .bind(project)
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading a Label Studio project for a webhook"))?;
        rows.into_iter().next().ok_or_else(|| {
            storage_core::Error::not_found(format!("Label Studio project {project}"))
        })
    }
}

/// The project as `ProjectWebhookSerializer` writes it, its secrets
/// (`token`, `task_data_login`, `task_data_password`) `null`.
fn project_json(row: &DbRow) -> Result<Value> {
    let mut out = Map::new();
    out.insert("id".into(), Value::from(get::<i64>(row, "id")?));
    for count in [
        "task_number",
        "finished_task_number",
        "total_predictions_number",
        "total_annotations_number",
        "num_tasks_with_annotations",
        "useful_annotation_number",
        "ground_truth_number",
        "skipped_annotations_number",
    ] {
        out.insert(count.into(), Value::from(get::<i64>(row, count)?));
    }
    for (key, _, kind) in PROJECT_FIELDS {
        let column = format!("p_{key}");
        let value = match kind {
            Column::Int => get::<Option<i64>>(row, &column)?.map_or(Value::Null, Value::from),
            Column::Text => get::<Option<String>>(row, &column)?.map_or(Value::Null, Value::from),
            Column::Bool => get::<Option<bool>>(row, &column)?.map_or(Value::Null, Value::from),
            Column::Json => json_column(row, &column)?,
            Column::Time => iso(row, &column)?,
            Column::Withheld => Value::Null,
        };
        out.insert((*key).into(), value);
    }
    Ok(Value::Object(out))
}
