//! The minimal host surface of the server (`storage-server`): projects, task import
//! and listing, annotations (whose saves and deletes drive export).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::{json, Value};
use storage_core::host::{HostStore, NewProject, Project, Queue, TaskRecord, TaskSize, UserRecord};
use storage_core::label_config::LabelConfig;
use storage_core::parse::interpret;
use storage_core::persist::Caller;
use storage_core::task_data::TaskData;
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

/// Label Studio's `UserSimpleSerializer`.
fn user_simple(user: &UserRecord) -> Value {
    json!({
        "id": user.id,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "avatar": null,
    })
}

/// A project with its counters and the caller's queue.
async fn shown_project(state: &ApiState, caller: &Caller, project: &Project) -> ApiResult<Value> {
    let queue = host(state)?.queue(project.id, caller.user_id).await?;
    Ok(project_json(project, queue))
}

pub(crate) fn project_json(project: &Project, queue: Queue) -> Value {
    let config = LabelConfig::lenient(&project.label_config);
    let counters = &project.counters;
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
        "created_by": user_simple(&project.created_by),
        "created_at": iso(project.created_at),
        "min_annotations_to_start_training": 0,
        "start_training_on_annotation_update": false,
        "show_collab_predictions": true,
        "num_tasks_with_annotations": counters.num_tasks_with_annotations,
        "task_number": counters.task_number,
        "useful_annotation_number": counters.useful_annotation_number,
        "ground_truth_number": counters.ground_truth_number,
        "skipped_annotations_number": counters.skipped_annotations_number,
        "total_annotations_number": counters.total_annotations_number,
        "total_predictions_number": counters.total_predictions_number,
        "sampling": "Sequential sampling",
        "show_ground_truth_first": false,
        "annotator_evaluation_enabled": false,
        "show_overlap_first": false,
        "overlap_cohort_percentage": 100,
        "task_data_login": null,
        "task_data_password": null,
        "control_weights": config.control_weights(),
        "parsed_label_config": config.parsed(),
        "evaluate_predictions_automatically": false,
        "config_has_control_tags": config.has_controls(),
        "skip_queue": "REQUEUE_FOR_OTHERS",
        "reveal_preannotations_interactively": false,
        "pinned_at": null,
        "finished_task_number": counters.finished_task_number,
        "queue_total": queue.total,
        "queue_done": queue.done,
        "config_suitable_for_bulk_annotation": config.suitable_for_bulk_annotation(),
        "state": null,
    })
}

/// Django REST framework's `PageNumberPagination`: the page size asked
/// for (a bad one is the default, a large one the maximum), and the page
/// (`last` or a number within the pages; page 1 of nothing is valid).
struct Paging {
    page: u64,
    page_size: u64,
}

impl Paging {
    /// The page size of `query`.
    fn page_size(query: Option<&str>, default: u64, max: u64) -> u64 {
        query_param(query, "page_size")
            .and_then(|raw| raw.parse::<u64>().ok())
            .filter(|n| *n > 0)
            .map_or(default, |n| n.min(max))
    }

    /// The page of `query` among `count` items, or Label Studio's
    /// 404 "Invalid page.": clients page until it (the legacy SDK's
    /// `get_tasks`, SDK 2's pagers, hand-written loops).
    fn of(query: Option<&str>, count: u64, page_size: u64) -> ApiResult<Self> {
        let pages = count.max(1).div_ceil(page_size);
        let raw = query_param(query, "page").unwrap_or_else(|| "1".into());
        let page = if raw == "last" {
            pages
        } else {
            raw.parse::<u64>().map_err(|_| invalid_page())?
        };
        if page == 0 || page > pages {
            return Err(invalid_page());
        }
        Ok(Self { page, page_size })
    }
}

fn invalid_page() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Invalid page.")
}

/// How tasks are shown: the labelling config (for `$undefined$`) and, unless
/// the client asked `resolve_uri=false`, the bucket storages whose URIs are
/// rewritten to the resolver.
struct TaskView {
    data_key: Option<String>,
    url_base: String,
    storages: Vec<(storage_core::Storage, storage_core::uri::BucketUri)>,
}

impl TaskView {
    async fn of(state: &ApiState, project: &Project, query: Option<&str>) -> ApiResult<Self> {
        let resolve = query_param(query, "resolve_uri")
            .is_none_or(|v| !matches!(v.as_str(), "false" | "0" | "False"));
        Ok(Self {
            data_key: LabelConfig::lenient(&project.label_config)
                .first_data_key()
                .map(str::to_string),
            url_base: state.url_base().to_string(),
            storages: if resolve {
                crate::resolve::bucket_storages(state, project.id).await?
            } else {
                Vec::new()
            },
        })
    }

    /// The task as the task API shows it, as JSON text. The data is
    /// carried as text: URIs are rewritten in it without building it as a
    /// tree of values, so a large task costs about its size again.
    fn show(&self, task: TaskRecord) -> Vec<u8> {
        let id = task.id;
        task_json(task, |data| {
            let data = data.shown(self.data_key.as_deref());
            let schemes: Vec<&str> = self.schemes().collect();
            if !schemes
                .iter()
                .any(|scheme| data.as_str().contains(&format!("{scheme}://")))
            {
                return data;
            }
            data.map_strings(&mut |text| {
                let mut changed: Option<String> = None;
                for scheme in &schemes {
                    let current = changed.as_deref().unwrap_or(text);
                    if let Some(new) = crate::resolve::rewrite_text(
                        current,
                        scheme,
                        id,
                        &self.url_base,
                        &self.storages,
                    ) {
                        changed = Some(new);
                    }
                }
                changed
            })
        })
    }

    /// Appends `tasks` to a JSON list being written to `out`; `shown`
    /// counts the tasks written so far (for the commas).
    fn write_tasks(&self, tasks: Vec<TaskRecord>, out: &mut Vec<u8>, shown: &mut usize) {
        for task in tasks {
            if *shown > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&self.show(task));
            *shown += 1;
        }
    }

    /// The URI schemes of the storages whose URIs are rewritten.
    fn schemes(&self) -> impl Iterator<Item = &'static str> + '_ {
        let mut seen: Vec<&'static str> = Vec::new();
        self.storages
            .iter()
            .map(|(_, uri)| uri.scheme())
            .filter(move |scheme| {
                let new = !seen.contains(scheme);
                seen.push(scheme);
                new
            })
    }
}

/// Label Studio's Data Manager summary of results (`annotations_results`,
/// `predictions_results`): the results as JSON joined by commas (as its
/// SQLite `GROUP_CONCAT`), cut at 500 characters, quotes removed.
fn results_summary(items: &[Value]) -> String {
    let joined = items
        .iter()
        .filter_map(|item| item.get("result"))
        .map(python_json)
        .collect::<Vec<_>>()
        .join(",");
    let cut: String = joined.chars().take(500).collect();
    cut.replace(",\"", ", \"")
        .replace("],[", "] [")
        .replace('"', "")
}

/// JSON as Python's `json.dumps` writes it (`", "` and `": "`).
fn python_json(value: &Value) -> String {
    match value {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(python_json).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), python_json(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// `predictions_model_versions`: the distinct model versions, joined by
/// commas.
fn model_versions(predictions: &[Value]) -> String {
    let mut versions: Vec<&str> = Vec::new();
    for version in predictions
        .iter()
        .filter_map(|p| p.get("model_version").and_then(Value::as_str))
        .filter(|v| !v.is_empty())
    {
        if !versions.contains(&version) {
            versions.push(version);
        }
    }
    versions.join(",").replace('"', "")
}

/// A task in Label Studio's shape (its keys in Label Studio's order) as
/// JSON text, its data as `show_data` makes it.
fn task_json(task: TaskRecord, show_data: impl FnOnce(TaskData) -> TaskData) -> Vec<u8> {
    let TaskRecord {
        id,
        project,
        inner_id,
        data,
        meta,
        created_at,
        updated_at,
        is_labeled,
        overlap,
        allow_skip: _,
        total_annotations,
        cancelled_annotations,
        total_predictions,
        storage_filename,
        storage_object_exists,
        annotations,
        predictions,
    } = task;
    let annotations_ids = annotations
        .iter()
        .filter_map(|a| a.get("id").and_then(Value::as_i64))
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let annotations_results = results_summary(&annotations);
    let predictions_results = results_summary(&predictions);
    let predictions_model_versions = model_versions(&predictions);
    let before_data = json!({
        "id": id,
        "predictions": predictions,
        "annotations": annotations,
        "drafts": [],
        "annotators": [],
        "inner_id": inner_id,
        "cancelled_annotations": cancelled_annotations,
        "total_annotations": total_annotations,
        "total_predictions": total_predictions,
        "completed_at": null,
        "annotations_results": annotations_results,
        "predictions_results": predictions_results,
        "predictions_score": null,
        "file_upload": null,
        "storage_filename": storage_filename,
        // Extension: false once a sync following the bucket found the
        // object gone (or changed under the task's annotations).
        "storage_object_exists": storage_object_exists,
        "annotations_ids": annotations_ids,
        "predictions_model_versions": predictions_model_versions,
        "avg_lead_time": null,
        "draft_exists": false,
        "updated_by": [],
    });
    let after_data = json!({
        "meta": meta,
        "created_at": iso(created_at),
        "updated_at": iso(updated_at),
        "is_labeled": is_labeled,
        "overlap": overlap,
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": null,
        "project": project,
        "comment_authors": [],
    });
    let data = show_data(data);
    // `{before…` + `,"data":` + data + `,` + `…after}`: both objects are
    // non-empty, so each serializes as `{…}`.
    let before = before_data.to_string();
    let after = after_data.to_string();
    let mut out = Vec::with_capacity(before.len() + data.len() + after.len() + 10);
    out.extend_from_slice(&before.as_bytes()[..before.len() - 1]);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.as_str().as_bytes());
    out.push(b',');
    out.extend_from_slice(&after.as_bytes()[1..]);
    out
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
    let label_config = match body.get("label_config") {
        // Label Studio's default config.
        None | Some(Value::Null) => "<View></View>".to_string(),
        Some(_) => text("label_config")?,
    };
    check_label_config(&state, &label_config)?;
    let project = host(&state)?
        .create_project(
            &caller,
            NewProject {
                title,
                description: text("description")?,
                label_config,
            },
        )
        .await?;
    let json = shown_project(&state, &caller, &project).await?;
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

/// A `label_config` within the size limit that parses as Label Studio's
/// validation requires, or a 400 naming the field.
fn check_label_config(state: &ApiState, config: &str) -> ApiResult<()> {
    let limit = state.max_label_config_bytes();
    if config.len() > limit {
        return Err(ApiError::field(
            "label_config",
            format!("Ensure this field has no more than {limit} bytes."),
        ));
    }
    LabelConfig::parse(config)
        .map(|_| ())
        .map_err(|reason| ApiError::field("label_config", reason))
}

/// `GET /api/projects`: the caller's organisation's projects, newest
/// first, in pages of 30 (at most 100).
pub(crate) async fn list_projects(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let query = query.as_deref();
    let store = host(&state)?;
    let page_size = Paging::page_size(query, 30, 100);
    // The count first: which pages exist.
    let count = store.projects(caller.organization_id, 1, 1).await?.count;
    let paging = Paging::of(query, count, page_size)?;
    let page = store
        .projects(caller.organization_id, paging.page, paging.page_size)
        .await?;
    let mut results = Vec::with_capacity(page.projects.len());
    for project in &page.projects {
        results.push(shown_project(&state, &caller, project).await?);
    }
    let link = |page: u64| page_link(&state, &headers, "/api/projects", query, page);
    let last = page.count.max(1).div_ceil(page_size);
    Ok(Json(json!({
        "count": page.count,
        "next": (paging.page < last).then(|| link(paging.page + 1)),
        "previous": (paging.page > 1).then(|| link(paging.page - 1)),
        "results": results,
    })))
}

/// The absolute URL of another page, as Django REST framework builds it:
/// the request's query with `page` replaced (left out for page 1).
fn page_link(
    state: &ApiState,
    headers: &HeaderMap,
    path: &str,
    query: Option<&str>,
    page: u64,
) -> String {
    let base = if state.url_base().is_empty() {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}")
    } else {
        state.url_base().to_string()
    };
    let mut pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .filter(|(k, _)| k != "page")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    if page > 1 {
        pairs.push(("page".into(), page.to_string()));
    }
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    if query.is_empty() {
        format!("{base}{path}")
    } else {
        format!("{base}{path}?{query}")
    }
}

/// `GET /api/projects/{id}`.
pub(crate) async fn get_project(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let project = visible_project(&state, &caller, parse_id(&id)?).await?;
    Ok(Json(shown_project(&state, &caller, &project).await?))
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

/// `GET /api/tasks?project=&page=&page_size=`: pages of 100 tasks (at
/// most 10,000); a page past the last is Label Studio's 404
/// "Invalid page.".
pub(crate) async fn list_tasks(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let query = query.as_deref();
    let project = query_param(query, "project")
        .ok_or_else(|| ApiError::field("project", "This query parameter is required."))?;
    let project = visible_project(
        &state,
        &caller,
        project.parse().map_err(|_| ApiError::not_found())?,
    )
    .await?;
    let page_size = Paging::page_size(query, 100, 10_000);
    let paging = Paging::of(query, project.counters.task_number, page_size)?;
    let view = TaskView::of(&state, &project, query).await?;
    let host = host(&state)?.clone();
    let page = host
        .task_page(project.id, paging.page, paging.page_size)
        .await?;
    let mut pieces = pieces(&page, TASK_LIST_PIECE_BYTES).into_iter();
    // The first piece is read before the answer starts, so that a failing
    // database is an error answer rather than a cut one.
    let first = match pieces.next() {
        Some(ids) => host.tasks_by_id(&ids).await?,
        None => Vec::new(),
    };
    let counters = &project.counters;
    let mut head = format!(
        "{{\"total_annotations\":{},\"total_predictions\":{},\"total\":{},\"tasks\":[",
        counters.total_annotations_number, counters.total_predictions_number, counters.task_number
    )
    .into_bytes();
    let mut shown = 0usize;
    view.write_tasks(first, &mut head, &mut shown);
    let project_id = project.id;
    let rest = futures::stream::unfold(
        (pieces, host, view, shown),
        move |(mut pieces, host, view, mut shown)| async move {
            let ids = pieces.next()?;
            let mut out = Vec::new();
            match host.tasks_by_id(&ids).await {
                Ok(tasks) => view.write_tasks(tasks, &mut out, &mut shown),
                Err(err) => {
                    // The answer has begun: all that is left is to cut it,
                    // which every client sees as a failed request.
                    tracing::error!(project = project_id, error = %err, "task list cut short");
                    return Some((Err(err), (pieces, host, view, shown)));
                }
            }
            Some((Ok(Bytes::from(out)), (pieces, host, view, shown)))
        },
    );
    let body =
        futures::stream::once(async move { Ok::<_, storage_core::Error>(Bytes::from(head)) })
            .chain(rest)
            .chain(futures::stream::once(async {
                Ok(Bytes::from_static(b"]}"))
            }));
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// A task page is read from the database and sent in pieces of about this
/// much task data (one task at least): a page of large tasks costs the
/// memory of a piece, not of the page.
const TASK_LIST_PIECE_BYTES: u64 = 4 * 1024 * 1024;

/// The ids of `page` in pieces of at most `max_bytes` of data each, or of
/// one task where one alone is larger.
fn pieces(page: &[TaskSize], max_bytes: u64) -> Vec<Vec<i64>> {
    let mut pieces: Vec<Vec<i64>> = Vec::new();
    let mut bytes = 0;
    for task in page {
        match pieces.last_mut() {
            Some(piece) if bytes + task.data_bytes <= max_bytes => {
                piece.push(task.id);
                bytes += task.data_bytes;
            }
            _ => {
                pieces.push(vec![task.id]);
                bytes = task.data_bytes;
            }
        }
    }
    pieces
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
) -> ApiResult<Response> {
    let (task, project) = visible_task(&state, &caller, parse_id(&id)?).await?;
    let view = TaskView::of(&state, &project, query.as_deref()).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        view.show(task),
    )
        .into_response())
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

/// `GET /api/annotations/{id}`.
pub(crate) async fn get_annotation(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (id, _) = visible_annotation(&state, &caller, &id).await?;
    host(&state)?
        .annotation(id)
        .await?
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// `GET /api/tasks/{id}/annotations`: the task's annotations that are not
/// cancelled, by id (as Label Studio lists them).
pub(crate) async fn list_annotations(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let (task, _) = visible_task(&state, &caller, parse_id(&id)?).await?;
    Ok(Json(Value::Array(
        task.annotations
            .into_iter()
            .filter(|a| a.get("was_cancelled") != Some(&Value::Bool(true)))
            .collect(),
    )))
}

/// `GET /api/current-user/whoami`: the caller, in Label Studio's
/// `WhoAmIUserSerializer` shape.
pub(crate) async fn whoami(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
) -> ApiResult<Json<Value>> {
    let user = host(&state)?
        .user(caller.user_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({
        "id": user.id,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "username": user.email,
        "email": user.email,
        "last_activity": iso(user.date_joined),
        "custom_hotkeys": {},
        "avatar": null,
        "initials": initials(&user),
        "phone": "",
        "active_organization": user.organization,
        "active_organization_meta": {"title": "", "email": ""},
        "allow_newsletters": null,
        "date_joined": iso(user.date_joined),
        "permissions": [],
    })))
}

/// Label Studio's `User.get_initials`.
fn initials(user: &UserRecord) -> String {
    let first = |s: &str| s.chars().take(1).collect::<String>();
    match (user.first_name.is_empty(), user.last_name.is_empty()) {
        (true, true) => user.email.chars().take(2).collect(),
        (false, true) => first(&user.first_name),
        (true, false) => first(&user.last_name),
        (false, false) => first(&user.first_name) + &first(&user.last_name),
    }
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
