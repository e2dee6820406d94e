//! The minimal host surface of the server (`storage-server`): projects, task import
//! and listing, annotations (whose saves and deletes drive export).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use storage_core::host::{shown_data, HostStore, NewProject, Project, TaskRecord};
use storage_core::parse::interpret;
use storage_core::persist::Caller;
use storage_core::ValidationErrors;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Authenticated, Body, JsonValue};
use crate::render::iso;
use crate::storages::query_param;
use crate::ApiState;

fn host(state: &ApiState) -> ApiResult<&Arc<dyn HostStore>> {
    state.host().ok_or_else(ApiError::not_found)
}

fn parse_id(raw: &str) -> ApiResult<i64> {
    raw.parse().map_err(|_| ApiError::not_found())
}

async fn visible_project(state: &ApiState, caller: &Caller, id: i64) -> ApiResult<Project> {
    if !state.access().project_visible(caller, id).await? {
        return Err(ApiError::not_found());
    }
    host(state)?
        .project(id)
        .await?
        .ok_or_else(ApiError::not_found)
}

fn project_json(project: &Project) -> Value {
    json!({
        "id": project.id,
        "title": project.title,
        "description": project.description,
        "label_config": project.label_config,
        "expert_instruction": "",
        "show_instruction": false,
        "show_skip_button": true,
        "enable_empty_annotation": true,
        "show_annotation_history": false,
        "organization": project.organization,
        "color": "#FFFFFF",
        "maximum_annotations": 1,
        "is_published": false,
        "model_version": "",
        "is_draft": false,
        "created_by": {"id": project.created_by},
        "created_at": iso(project.created_at),
        "min_annotations_to_start_training": 0,
        "start_training_on_annotation_update": false,
        "show_collab_predictions": true,
        "num_tasks_with_annotations": null,
        "task_number": project.task_number,
        "useful_annotation_number": null,
        "ground_truth_number": null,
        "skipped_annotations_number": null,
        "total_annotations_number": project.total_annotations_number,
        "total_predictions_number": project.total_predictions_number,
        "sampling": "Sequential sampling",
        "show_ground_truth_first": false,
        "show_overlap_first": false,
        "overlap_cohort_percentage": 100,
        "task_data_login": null,
        "task_data_password": null,
        "control_weights": {},
        "parsed_label_config": {},
        "evaluate_predictions_automatically": false,
        "config_has_control_tags": true,
        "skip_queue": "REQUEUE_FOR_OTHERS",
        "reveal_preannotations_interactively": false,
        "pinned_at": null,
        "finished_task_number": null,
        "queue_total": 0,
        "queue_done": 0,
        "config_suitable_for_bulk_annotation": true,
        "state": null,
    })
}

/// How tasks are shown: the labelling config (for `$undefined$`) and, unless
/// the client asked `resolve_uri=false`, the bucket storages whose URIs are
/// rewritten to the resolver.
struct TaskView {
    label_config: String,
    url_base: String,
    storages: Vec<(storage_core::Storage, storage_core::uri::BucketUri)>,
}

impl TaskView {
    async fn of(state: &ApiState, project: &Project, query: Option<&str>) -> ApiResult<Self> {
        let resolve = query_param(query, "resolve_uri")
            .is_none_or(|v| !matches!(v.as_str(), "false" | "0" | "False"));
        Ok(Self {
            label_config: project.label_config.clone(),
            url_base: state.url_base().to_string(),
            storages: if resolve {
                crate::resolve::bucket_storages(state, project.id).await?
            } else {
                Vec::new()
            },
        })
    }

    fn show(&self, task: TaskRecord) -> Value {
        let id = task.id;
        let mut json = task_json(task, &self.label_config);
        if let Some(Value::Object(data)) = json.get_mut("data") {
            crate::resolve::rewrite_task_data(data, id, &self.url_base, &self.storages);
        }
        json
    }
}

fn task_json(task: TaskRecord, label_config: &str) -> Value {
    let annotations_ids = task
        .annotations
        .iter()
        .filter_map(|a| a.get("id").and_then(Value::as_i64))
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    json!({
        "id": task.id,
        "predictions": task.predictions,
        "annotations": task.annotations,
        "drafts": [],
        "annotators": [],
        "inner_id": task.inner_id,
        "cancelled_annotations": task.cancelled_annotations,
        "total_annotations": task.total_annotations,
        "total_predictions": task.total_predictions,
        "completed_at": null,
        "annotations_results": "",
        "predictions_results": "",
        "predictions_score": null,
        "file_upload": null,
        "storage_filename": task.storage_filename,
        "annotations_ids": annotations_ids,
        "predictions_model_versions": "",
        "avg_lead_time": null,
        "draft_exists": false,
        "updated_by": [],
        "data": shown_data(task.data, label_config),
        "meta": task.meta,
        "created_at": iso(task.created_at),
        "updated_at": iso(task.updated_at),
        "is_labeled": task.is_labeled,
        "overlap": task.overlap,
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": null,
        "project": task.project,
        "comment_authors": [],
    })
}

/// `POST /api/projects`.
pub(crate) async fn create_project(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Body(body): Body,
) -> ApiResult<Response> {
    let text = |field: &str| -> ApiResult<String> {
        match body.get(field) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(ApiError::field(field, "Not a valid string.")),
        }
    };
    let title = text("title")?;
    if title.chars().count() > 50 {
        return Err(ApiError::field(
            "title",
            "Ensure this field has no more than 50 characters.",
        ));
    }
    let project = host(&state)?
        .create_project(
            &caller,
            NewProject {
                title,
                description: text("description")?,
                label_config: text("label_config")?,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(project_json(&project))).into_response())
}

/// `GET /api/projects/{id}`.
pub(crate) async fn get_project(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let project = visible_project(&state, &caller, parse_id(&id)?).await?;
    Ok(Json(project_json(&project)))
}

/// `POST /api/projects/{id}/import`: a JSON array of tasks (or one task).
pub(crate) async fn import_tasks(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    JsonValue(body): JsonValue,
) -> ApiResult<Response> {
    let started = Instant::now();
    let project = visible_project(&state, &caller, parse_id(&id)?).await?;
    let items = match body {
        Value::Array(items) => items,
        item @ Value::Object(_) => vec![item],
        _ => {
            return Err(ApiError::field(
                storage_core::NON_FIELD_ERRORS,
                "Expected a JSON array of tasks or one task object.",
            ))
        }
    };
    let mut errors = ValidationErrors::default();
    let mut tasks = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        match interpret(item, None) {
            Ok(task) => tasks.push(task),
            Err(reason) => errors.add(
                storage_core::NON_FIELD_ERRORS,
                format!("task {index}: {reason}"),
            ),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let annotations: usize = tasks.iter().map(|t| t.annotations.len()).sum();
    let predictions: usize = tasks.iter().map(|t| t.predictions.len()).sum();
    let ids = host(&state)?.import_tasks(project.id, tasks).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "task_count": ids.len(),
            "annotation_count": annotations,
            "prediction_count": predictions,
            "duration": started.elapsed().as_secs_f64(),
            "file_upload_ids": [],
            "could_be_tasks_list": false,
            "found_formats": [],
            "data_columns": [],
        })),
    )
        .into_response())
}

/// `GET /api/tasks?project=&page=&page_size=`.
pub(crate) async fn list_tasks(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let query = query.as_deref();
    let project = query_param(query, "project")
        .ok_or_else(|| ApiError::field("project", "This query parameter is required."))?;
    let project = visible_project(
        &state,
        &caller,
        project.parse().map_err(|_| ApiError::not_found())?,
    )
    .await?;
    let number = |name: &str, default: u64| -> ApiResult<u64> {
        match query_param(query, name) {
            None => Ok(default),
            Some(raw) => raw
                .parse::<u64>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| ApiError::field(name, "A valid positive integer is required.")),
        }
    };
    let page = number("page", 1)?;
    let page_size = number("page_size", 100)?.min(10_000);
    let view = TaskView::of(&state, &project, query).await?;
    let tasks = host(&state)?.tasks(project.id, page, page_size).await?;
    Ok(Json(json!({
        "total_annotations": tasks.total_annotations,
        "total_predictions": tasks.total_predictions,
        "total": tasks.total,
        "tasks": tasks.tasks.into_iter().map(|t| view.show(t)).collect::<Vec<_>>(),
    })))
}

async fn visible_task(
    state: &ApiState,
    caller: &Caller,
    id: i64,
) -> ApiResult<(TaskRecord, Project)> {
    let task = host(state)?
        .task(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let project = visible_project(state, caller, task.project).await?;
    Ok((task, project))
}

/// `GET /api/tasks/{id}`.
pub(crate) async fn get_task(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let (task, project) = visible_task(&state, &caller, parse_id(&id)?).await?;
    let view = TaskView::of(&state, &project, query.as_deref()).await?;
    Ok(Json(view.show(task)))
}

/// `POST /api/tasks/{id}/annotations`: saves, then writes the annotation
/// to every export storage of the project.
pub(crate) async fn create_annotation(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let (task, project) = visible_task(&state, &caller, parse_id(&id)?).await?;
    let annotation = host(&state)?
        .create_annotation(&caller, task.id, &body)
        .await?;
    export_saved(&state, project.id, &annotation).await;
    Ok((StatusCode::CREATED, Json(annotation)).into_response())
}

async fn visible_annotation(state: &ApiState, caller: &Caller, raw: &str) -> ApiResult<(i64, i64)> {
    let id = parse_id(raw)?;
    let project = host(state)?
        .annotation_project(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if !state.access().project_visible(caller, project).await? {
        return Err(ApiError::not_found());
    }
    Ok((id, project))
}

/// `PATCH /api/annotations/{id}`: updates, then exports again.
pub(crate) async fn update_annotation(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let (id, project) = visible_annotation(&state, &caller, &id).await?;
    let annotation = host(&state)?
        .update_annotation(&caller, id, &body)
        .await?
        .ok_or_else(ApiError::not_found)?;
    export_saved(&state, project, &annotation).await;
    Ok(Json(annotation))
}

/// `DELETE /api/annotations/{id}`: deletes, then removes the exported
/// objects of storages with `can_delete_objects`.
pub(crate) async fn delete_annotation(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let (id, _) = visible_annotation(&state, &caller, &id).await?;
    let project = host(&state)?
        .delete_annotation(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if let Err(err) = state.sync().annotation_deleted(project, id).await {
        tracing::warn!(annotation = id, error = %err, "removing exported annotation failed");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The annotation is saved whatever happens to its export: failures are
/// logged per storage and the next export sync writes it again.
async fn export_saved(state: &ApiState, project: i64, annotation: &Value) {
    let Some(id) = annotation.get("id").and_then(Value::as_i64) else {
        return;
    };
    if let Err(err) = state.sync().annotation_saved(project, id).await {
        tracing::warn!(annotation = id, error = %err, "exporting annotation failed");
    }
}
