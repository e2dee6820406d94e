//! `GET /data/local-files/?d=<path>`: serves a file below a local import
//! storage of a project the caller may see.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use storage_core::persist::StorageFilter;
use storage_core::{Error, StorageKind};
use storage_localfiles::{normalize_path, resolve_served_file};

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
    let Some(local) = state.local_files().filter(|l| l.serving_enabled()) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Serving local files is disabled: set LOCAL_FILES_SERVING_ENABLED=true and LOCAL_FILES_DOCUMENT_ROOT.",
        ));
    };
    let d = query_param(query.as_deref(), "d")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| ApiError::field("d", "This query parameter is required."))?;
    let file = resolve_served_file(local.document_root(), &d).map_err(|err| match err {
        Error::PermissionDenied { .. } => ApiError::forbidden(),
        _ => ApiError::not_found(),
    })?;
    if !permitted(&state, &caller, &file).await? {
        return Err(ApiError::not_found());
    }
    let location = Path::from_absolute_path(&file).map_err(|_| ApiError::not_found())?;
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(LocalFileSystem::new());
    serve_object(
        store,
        &location,
        &headers,
        &ServeOptions {
            cache_control: None,
            store_etag: false,
        },
    )
    .await
    .map_err(|err| match err {
        Error::NotFound { .. } => ApiError::not_found(),
        other => ApiError::from(other),
    })
}

/// Whether some local import storage of a project the caller may see holds
/// `file` (compared by whole path segments, after resolving symlinks).
async fn permitted(
    state: &ApiState,
    caller: &storage_core::persist::Caller,
    file: &std::path::Path,
) -> ApiResult<bool> {
    let storages = state
        .storages()
        .storages(StorageFilter {
            project: None,
            kind: Some(StorageKind::Import),
            storage_type: Some("localfiles"),
        })
        .await?;
    let mut visible: HashMap<i64, bool> = HashMap::new();
    for storage in storages {
        let Some(path) = storage.settings.str("path") else {
            continue;
        };
        let Ok(dir) = PathBuf::from(normalize_path(path)).canonicalize() else {
            continue;
        };
        if !file.starts_with(&dir) {
            continue;
        }
        let allowed = match visible.get(&storage.project) {
            Some(allowed) => *allowed,
            None => {
                let allowed = state
                    .access()
                    .project_visible(caller, storage.project)
                    .await?;
                visible.insert(storage.project, allowed);
                allowed
            }
        };
        if allowed {
            return Ok(true);
        }
    }
    Ok(false)
}
