//! `GET /data/local-files/?d=<path>`: serves a file of the backend that
//! serves files (local files), to a caller who may see a project with a
//! storage of that backend holding the file. Which file `d` names and which
//! storages hold it is the backend's rule ([`storage_core::FileServer`]).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use storage_core::persist::{Caller, StorageFilter};
use storage_core::{Error, FileServer, ServedFile, StorageKind};

use crate::error::{ApiError, ApiResult};
use crate::extract::Authenticated;
use crate::serve::{serve_object, ServeOptions};
use crate::storages::query_param;
use crate::ApiState;

pub(crate) async fn serve(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Some((storage_type, server)) = state.backends().file_server() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Serving local files is disabled: set LOCAL_FILES_SERVING_ENABLED=true and LOCAL_FILES_DOCUMENT_ROOT.",
        ));
    };
    let d = query_param(query.as_deref(), "d")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| ApiError::field("d", "This query parameter is required."))?;
    let resolver = server.clone();
    let file = off_runtime(move || resolver.resolve(&d))
        .await?
        .map_err(|err| match err {
            Error::PermissionDenied { .. } => ApiError::forbidden(),
            _ => ApiError::not_found(),
        })?;
    let file = served_by_visible_storage(&state, &caller, storage_type, server, file)
        .await?
        .ok_or_else(ApiError::not_found)?;
    serve_object(
        file.store.clone(),
        &file.location,
        &headers,
        &ServeOptions {
            cache_control: None,
            store_etag: false,
        },
    )
    .await
    .map_err(|err| match err {
        Error::NotFound { .. } | Error::PermissionDenied { .. } => ApiError::not_found(),
        other => ApiError::from(other),
    })
}

/// Runs file-system work on the blocking pool: a slow or deep folder must
/// not stall other requests on the async workers.
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| ApiError::from(Error::backend("serving a local file", err)))
}

/// `file` as served by some import storage of `storage_type` of a project
/// the caller may see. Only the caller's storages are looked at on disk:
/// projects are checked first (in one query), folders after.
async fn served_by_visible_storage(
    state: &ApiState,
    caller: &Caller,
    storage_type: &str,
    server: Arc<dyn FileServer>,
    file: ServedFile,
) -> ApiResult<Option<ServedFile>> {
    let storages = state
        .storages()
        .storages(StorageFilter {
            project: None,
            kind: Some(StorageKind::Import),
            storage_type: Some(storage_type),
        })
        .await?;
    let mut projects: Vec<i64> = storages.iter().map(|s| s.project).collect();
    projects.sort_unstable();
    projects.dedup();
    let visible = state.access().visible_projects(caller, &projects).await?;
    let candidates: Vec<_> = storages
        .into_iter()
        .filter(|s| visible.contains(&s.project))
        .map(|s| s.settings)
        .collect();
    off_runtime(move || {
        candidates
            .iter()
            .find_map(|settings| server.within(settings, &file))
    })
    .await
}
