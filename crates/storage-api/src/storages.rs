//! The storage routes: per-type CRUD, validate, sync, and the aggregate
//! and type lists, for import (`/api/storages/...`) and export
//! (`/api/storages/export/...`) storages.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use storage_core::fields::StorageFields;
use storage_core::jobs::schedule::SYNC_INTERVAL_FIELD;
use storage_core::persist::{Caller, StorageFilter};
use storage_core::validation::{Report, ReportOptions};
use storage_core::{Backend, Error, NewStorage, Settings, Storage, StorageKind, ValidationErrors};

use crate::error::{ApiError, ApiResult};
use crate::extract::{Authenticated, Body};
use crate::render::{iso, storage_json};
use crate::ApiState;

/// `false` for import routes, `true` for export routes.
fn kind<const EXPORT: bool>() -> StorageKind {
    if EXPORT {
        StorageKind::Export
    } else {
        StorageKind::Import
    }
}

pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `GET /api/storages/types` and `/api/storages/export/types`.
pub(crate) async fn types(State(state): State<ApiState>, _: Authenticated) -> Json<Value> {
    Json(Value::Array(
        state
            .backends()
            .iter()
            .map(|b| json!({"name": b.name(), "title": b.title()}))
            .collect(),
    ))
}

/// `GET /api/storages/?project=` (and export): every type's list, in type
/// order; 200 `[]` when the project is missing, as in Label Studio.
pub(crate) async fn list_all<const EXPORT: bool>(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let Some(project) =
        query_param(query.as_deref(), "project").and_then(|p| p.parse::<i64>().ok())
    else {
        return Ok(Json(json!([])));
    };
    if !state.access().project_visible(&caller, project).await? {
        return Ok(Json(json!([])));
    }
    let storages = state
        .storages()
        .storages(StorageFilter {
            project: Some(project),
            kind: Some(kind::<EXPORT>()),
            storage_type: None,
        })
        .await?;
    let mut out = Vec::with_capacity(storages.len());
    for backend in state.backends().iter() {
        let fields = backend.fields(kind::<EXPORT>());
        out.extend(
            storages
                .iter()
                .filter(|s| s.storage_type == backend.name())
                .map(|s| storage_json(s, state.storages().route_id(s.id), &fields)),
        );
    }
    Ok(Json(Value::Array(out)))
}

/// `GET /api/storages/{type}?project=`.
pub(crate) async fn list<const EXPORT: bool>(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(storage_type): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let backend = state.backend(&storage_type)?;
    let project = query_param(query.as_deref(), "project").ok_or_else(|| {
        ApiError::field(
            storage_core::NON_FIELD_ERRORS,
            "query parameter \"project\" is required",
        )
    })?;
    let project: i64 = project.parse().map_err(|_| ApiError::not_found())?;
    if !state.access().project_visible(&caller, project).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "No Project matches the given query.",
        ));
    }
    let fields = backend.fields(kind::<EXPORT>());
    let storages = state
        .storages()
        .storages(StorageFilter {
            project: Some(project),
            kind: Some(kind::<EXPORT>()),
            storage_type: Some(backend.name()),
        })
        .await?;
    Ok(Json(Value::Array(
        storages
            .iter()
            .map(|s| storage_json(s, state.storages().route_id(s.id), &fields))
            .collect(),
    )))
}

/// `POST /api/storages/{type}`: create; export storages start a first sync
/// at once, as in Label Studio.
pub(crate) async fn create<const EXPORT: bool>(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(storage_type): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let (backend, candidate) =
        checked::<EXPORT>(&state, &caller, &storage_type, &body, false).await?;
    let kind = kind::<EXPORT>();
    let mut storage = state.storages().insert_storage(candidate).await?;
    tracing::info!(storage = storage.id, r#type = %storage.storage_type, kind = kind.as_str(), "storage created");
    if kind == StorageKind::Export {
        storage = state.sync().request_sync(storage.id).await?;
    }
    let fields = backend.fields(kind);
    Ok((
        StatusCode::CREATED,
        Json(storage_json(
            &storage,
            state.storages().route_id(storage.id),
            &fields,
        )),
    )
        .into_response())
}

/// `POST /api/storages/{type}/validate`: checks the fields and the
/// connection; with `id`, the stored storage (and its secrets) is the base.
/// Never saves anything. With `?report=true` (an extension) the answer is
/// always 200 with the report of every check
/// ([`storage_core::validation`]).
pub(crate) async fn validate<const EXPORT: bool>(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(storage_type): Path<String>,
    RawQuery(query): RawQuery,
    Body(body): Body,
) -> ApiResult<Response> {
    let wants_report = query_param(query.as_deref(), "report")
        .is_some_and(|v| matches!(v.as_str(), "true" | "1" | "True"));
    if wants_report {
        let report = validation_report::<EXPORT>(&state, &caller, &storage_type, &body).await?;
        return Ok(Json(report.to_json()).into_response());
    }
    checked::<EXPORT>(&state, &caller, &storage_type, &body, true).await?;
    Ok(StatusCode::OK.into_response())
}

/// The validation report of a validate body: `configuration` failed with
/// the field messages when the body does not make a valid storage.
async fn validation_report<const EXPORT: bool>(
    state: &ApiState,
    caller: &Caller,
    storage_type: &str,
    body: &Map<String, Value>,
) -> ApiResult<Report> {
    let kind = kind::<EXPORT>();
    let (backend, candidate) =
        match prepared::<EXPORT>(state, caller, storage_type, body, true).await {
            Ok(prepared) => prepared,
            Err(err) if err.status() == StatusCode::BAD_REQUEST => {
                return Ok(Report::invalid_configuration(kind, err.message()))
            }
            Err(err) => return Err(err),
        };
    let options = ReportOptions {
        timeout: state.sync().check_timeout(),
        policy: state.endpoint_policy(),
    };
    Ok(
        storage_core::validation::report(backend.as_ref(), kind, &candidate.settings, options)
            .await,
    )
}

/// How many objects `POST …/files` lists when the body gives no `limit`
/// (Label Studio's `DEFAULT_STORAGE_LIST_LIMIT`).
const DEFAULT_PREVIEW_LIMIT: u64 = 100;

/// The largest `limit` a preview accepts: the answer is held in memory.
const MAX_PREVIEW_LIMIT: u64 = 10_000;

/// How long a preview lists before it answers with what it found, as Label
/// Studio does.
const PREVIEW_SCAN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// `POST /api/storages/{type}/files`: the first `limit` objects a sync of
/// the body's settings would import (prefix, `recursive_scan` and
/// `regex_filter` applied), as `{key, last_modified, size}`, checked like
/// validate and creating nothing. When more objects follow, a last entry
/// with `key: null` says so; when listing takes over 30 s, a last entry
/// says the scan timed out.
pub(crate) async fn files(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(storage_type): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let limit = preview_limit(&body)?;
    let (backend, candidate) =
        checked::<false>(&state, &caller, &storage_type, &body, true).await?;
    let secrets = candidate
        .settings
        .secret_values(&backend.fields(StorageKind::Import));
    let listing_failed = |err: Error| {
        ApiError::validation(ValidationErrors::general(format!(
            "Failed to list storage files: {}",
            err.redacted(&secrets)
        )))
    };
    let source = backend
        .import_storage(&candidate.settings)
        .await
        .map_err(listing_failed)?;
    let mut objects = storage_core::import::importable(source.as_ref());
    let deadline = tokio::time::Instant::now() + PREVIEW_SCAN_DEADLINE;
    let mut files = Vec::new();
    let last = |key: Value| json!({"key": key, "last_modified": null, "size": null});
    loop {
        match tokio::time::timeout_at(deadline, objects.next()).await {
            Err(_) => {
                files.push(last(json!("... storage scan timeout reached ...")));
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(err))) => return Err(listing_failed(err)),
            Ok(Some(Ok(_))) if files.len() as u64 == limit => {
                files.push(last(Value::Null));
                break;
            }
            Ok(Some(Ok((key, meta)))) => files.push(json!({
                "key": key,
                "last_modified": iso(meta.last_modified),
                "size": meta.size,
            })),
        }
    }
    Ok(Json(json!({ "files": files })))
}

/// The body's `limit`: an integer (or a string of one) from 1 to 10,000.
fn preview_limit(body: &Map<String, Value>) -> ApiResult<u64> {
    let limit = match body.get("limit") {
        None | Some(Value::Null) => return Ok(DEFAULT_PREVIEW_LIMIT),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    limit
        .filter(|n| (1..=MAX_PREVIEW_LIMIT).contains(n))
        .ok_or_else(|| {
            ApiError::field(
                "limit",
                format!("A valid integer from 1 to {MAX_PREVIEW_LIMIT} is required."),
            )
        })
}

/// The backend of a create or validate request and the storage its body
/// describes, fields and connection checked; with `with_id`, over the
/// stored storage the body's `id` names.
async fn checked<const EXPORT: bool>(
    state: &ApiState,
    caller: &Caller,
    storage_type: &str,
    body: &Map<String, Value>,
    with_id: bool,
) -> ApiResult<(Arc<dyn Backend>, NewStorage)> {
    let (backend, candidate) =
        prepared::<EXPORT>(state, caller, storage_type, body, with_id).await?;
    check_connection(
        state,
        backend.as_ref(),
        kind::<EXPORT>(),
        &candidate.settings,
    )
    .await?;
    Ok((backend, candidate))
}

/// The backend and the storage a create/validate body makes (with `id`
/// and `with_id`, over the stored storage), checked against the schema and
/// the backend's rules but not connected to.
async fn prepared<const EXPORT: bool>(
    state: &ApiState,
    caller: &Caller,
    storage_type: &str,
    body: &Map<String, Value>,
    with_id: bool,
) -> ApiResult<(Arc<dyn Backend>, NewStorage)> {
    let kind = kind::<EXPORT>();
    let backend = state.backend(storage_type)?.clone();
    let existing = match body.get("id").filter(|v| with_id && !v.is_null()) {
        Some(id) => {
            let id = id
                .as_i64()
                .or_else(|| id.as_str().and_then(|s| s.parse().ok()));
            let id = id.ok_or_else(|| ApiError::field("id", "A valid integer is required."))?;
            let id = state
                .storages()
                .storage_id(kind, backend.name(), id)
                .ok_or_else(ApiError::not_found)?;
            Some(load(state, caller, kind, backend.name(), id).await?)
        }
        None => None,
    };
    let candidate = candidate(
        state,
        caller,
        backend.as_ref(),
        kind,
        body,
        existing.as_ref(),
    )
    .await?;
    Ok((backend, candidate))
}

/// `GET /api/storages/{type}/{id}`.
pub(crate) async fn detail<const EXPORT: bool>(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path((storage_type, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let backend = state.backend(&storage_type)?;
    let storage = load_str(&state, &caller, kind::<EXPORT>(), backend.name(), &id).await?;
    Ok(Json(storage_json(
        &storage,
        state.storages().route_id(storage.id),
        &backend.fields(kind::<EXPORT>()),
    )))
}

/// `PATCH /api/storages/{type}/{id}`: fields not sent keep their value
/// (secrets included); a secret sent as `""` is cleared.
pub(crate) async fn patch<const EXPORT: bool>(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path((storage_type, id)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let kind = kind::<EXPORT>();
    let backend = state.backend(&storage_type)?.clone();
    let mut storage = load_str(&state, &caller, kind, backend.name(), &id).await?;
    let candidate = candidate(
        &state,
        &caller,
        backend.as_ref(),
        kind,
        &body,
        Some(&storage),
    )
    .await?;
    let fields = backend.fields(kind);
    let touches_connection = fields.iter().any(|f| body.contains_key(f.name));
    if touches_connection {
        check_connection(&state, backend.as_ref(), kind, &candidate.settings).await?;
    }
    storage.project = candidate.project;
    storage.title = candidate.title;
    storage.description = candidate.description;
    storage.synchronizable = candidate.synchronizable;
    storage.settings = candidate.settings;
    state.storages().update_storage(&storage).await?;
    Ok(Json(storage_json(
        &storage,
        state.storages().route_id(storage.id),
        &fields,
    )))
}

/// `DELETE /api/storages/{type}/{id}`: 204; links go, tasks and objects stay.
pub(crate) async fn remove<const EXPORT: bool>(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path((storage_type, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let backend = state.backend(&storage_type)?;
    let storage = load_str(&state, &caller, kind::<EXPORT>(), backend.name(), &id).await?;
    if !state.storages().delete_storage(storage.id).await? {
        return Err(ApiError::not_found());
    }
    tracing::info!(storage = storage.id, "storage deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/storages/{type}/{id}/sync`: queues a sync and answers at once
/// with the storage (`status: "queued"`, or the running job's state). The
/// body may say `{"confirm_deletions": true}` (an extension): the sync then
/// applies the removals the deletion guard held back.
pub(crate) async fn sync<const EXPORT: bool>(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path((storage_type, id)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let confirm_deletions = match body.get("confirm_deletions") {
        None => false,
        Some(value) => storage_core::FieldSpec::boolean("confirm_deletions", false, "")
            .coerce(value)
            .map_err(|message| ApiError::field("confirm_deletions", message))?
            .as_bool()
            .unwrap_or(false),
    };
    let kind = kind::<EXPORT>();
    let backend = state.backend(&storage_type)?.clone();
    let storage = load_str(&state, &caller, kind, backend.name(), &id).await?;
    if !storage.synchronizable {
        return Err(ApiError::bare(
            StatusCode::BAD_REQUEST,
            json!({"message": format!("Storage {} is not synchronizable", storage.id)}),
        ));
    }
    // Settings that were valid at creation may not be any more (a deleted
    // folder, a changed document root): say so now rather than fail later.
    let mut settings = storage.settings.clone();
    backend.check_settings(kind, &mut settings)?;
    let storage = state
        .sync()
        .request_sync_confirming(storage.id, confirm_deletions)
        .await?;
    Ok(Json(storage_json(
        &storage,
        state.storages().route_id(storage.id),
        &backend.fields(kind),
    )))
}

pub(crate) async fn load_str(
    state: &ApiState,
    caller: &Caller,
    kind: StorageKind,
    storage_type: &str,
    id: &str,
) -> ApiResult<Storage> {
    let id = id
        .parse()
        .ok()
        .and_then(|id| state.storages().storage_id(kind, storage_type, id))
        .ok_or_else(ApiError::not_found)?;
    load(state, caller, kind, storage_type, id).await
}

/// The storage `id` if it is of this kind and type and the caller may see
/// its project; 404 otherwise, so foreign ids are not disclosed.
async fn load(
    state: &ApiState,
    caller: &Caller,
    kind: StorageKind,
    storage_type: &str,
    id: i64,
) -> ApiResult<Storage> {
    let storage = state
        .storages()
        .storage(id)
        .await?
        .filter(|s| s.kind == kind && s.storage_type == storage_type)
        .ok_or_else(ApiError::not_found)?;
    if !state
        .access()
        .project_visible(caller, storage.project)
        .await?
    {
        return Err(ApiError::not_found());
    }
    Ok(storage)
}

/// Checks a create/validate/patch body against the schema and the
/// backend's rules; `existing` is the base of partial updates.
async fn candidate(
    state: &ApiState,
    caller: &Caller,
    backend: &dyn Backend,
    kind: StorageKind,
    body: &Map<String, Value>,
    existing: Option<&Storage>,
) -> ApiResult<NewStorage> {
    let mut errors = ValidationErrors::default();
    let project = match body.get("project") {
        None | Some(Value::Null) => match existing {
            Some(storage) => Some(storage.project),
            None => {
                errors.add("project", "This field is required.");
                None
            }
        },
        Some(value) => {
            match value
                .as_i64()
                .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
            {
                Some(id) if state.access().project_visible(caller, id).await? => Some(id),
                Some(id) => {
                    errors.add(
                        "project",
                        format!("Invalid pk \"{id}\" - object does not exist."),
                    );
                    None
                }
                None => {
                    errors.add(
                        "project",
                        format!(
                            "Incorrect type. Expected pk value, received {}.",
                            type_name(value)
                        ),
                    );
                    None
                }
            }
        }
    };

    let specs = backend.fields(kind);
    let mut fields = match existing {
        Some(storage) => StorageFields::of(storage),
        None => StorageFields::defaults(&specs),
    };
    if let Err(e) = fields.apply(&specs, body) {
        errors.merge(e);
    }
    if let Some(storage) = existing {
        require_secrets_for_new_endpoint(&specs, body, storage, &fields.settings, &mut errors);
    }
    let min_interval = state.sync().min_sync_interval().as_secs();
    if let Some(seconds) = fields.settings.int(SYNC_INTERVAL_FIELD) {
        if u64::try_from(seconds).unwrap_or(0) < min_interval {
            errors.add(
                SYNC_INTERVAL_FIELD,
                format!(
                    "Ensure this value is greater than or equal to {min_interval} (the server's \
                     --min-sync-interval)."
                ),
            );
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    backend.check_settings(kind, &mut fields.settings)?;
    Ok(NewStorage {
        kind,
        storage_type: backend.name().to_string(),
        project: project.unwrap_or_default(),
        title: fields.title,
        description: fields.description,
        synchronizable: fields.synchronizable,
        settings: fields.settings,
    })
}

/// Whether the setting `name` says where the storage's requests go.
fn is_endpoint_field(name: &str) -> bool {
    name == "endpoint" || name.ends_with("_endpoint") || name.ends_with("_base_url")
}

/// A changed endpoint (PATCH, or validate with `id`) must come with the
/// stored secrets again: otherwise whoever may edit a storage could send
/// its keys to a server of their choosing. Each stored secret the body
/// does not repeat (or clear) is named in `errors`.
fn require_secrets_for_new_endpoint(
    specs: &[storage_core::FieldSpec],
    body: &Map<String, Value>,
    existing: &Storage,
    merged: &Settings,
    errors: &mut ValidationErrors,
) {
    let changed = specs
        .iter()
        .filter(|spec| is_endpoint_field(spec.name))
        .find(|spec| existing.settings.str(spec.name) != merged.str(spec.name));
    let Some(endpoint) = changed else {
        return;
    };
    for spec in specs.iter().filter(|spec| spec.secret) {
        let stored = existing
            .settings
            .str(spec.name)
            .is_some_and(|v| !v.is_empty());
        if stored && !body.contains_key(spec.name) {
            errors.add(
                spec.name,
                format!(
                    "Changing {} requires the credentials again: send {} with the new endpoint \
                     (stored secrets are never sent to a new endpoint).",
                    endpoint.name, spec.name
                ),
            );
        }
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "str",
        Value::Bool(_) => "bool",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
        Value::Number(_) => "float",
        Value::Null => "NoneType",
    }
}

/// Builds the storage and proves it can be reached within the configured
/// deadline; every failure is a 400 whose message says what is wrong.
async fn check_connection(
    state: &ApiState,
    backend: &dyn Backend,
    kind: StorageKind,
    settings: &Settings,
) -> ApiResult<()> {
    let secrets = settings.secret_values(&backend.fields(kind));
    storage_core::check_storage_within(backend, kind, settings, state.sync().check_timeout())
        .await
        .map_err(|err| match err.redacted(&secrets) {
            Error::InvalidConfig(errors) => ApiError::validation(errors),
            rejected @ Error::CredentialsRejected { .. } => ApiError::from(rejected),
            other => ApiError::validation(ValidationErrors::general(other.to_string())),
        })
}
