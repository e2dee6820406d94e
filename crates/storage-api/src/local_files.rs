//! `GET /data/local-files/?d=<path>`: serves a file of the backend that
//! serves files (local files), to a caller who may see a project with a
//! storage of that backend holding the file. Which file `d` names and which
//! storages hold it is the backend's rule ([`storage_core::FileServer`]).

use std::collections::HashMap;

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
    let file = server.resolve(&d).map_err(|err| match err {
        Error::PermissionDenied { .. } => ApiError::forbidden(),
        _ => ApiError::not_found(),
    })?;
    if !permitted(&state, &caller, storage_type, server.as_ref(), &file).await? {
        return Err(ApiError::not_found());
    }
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
        Error::NotFound { .. } => ApiError::not_found(),
        other => ApiError::from(other),
    })
}

/// Whether some import storage of `storage_type` of a project the caller
/// may see holds `file`.
async fn permitted(
    state: &ApiState,
    caller: &Caller,
    storage_type: &str,
    server: &dyn FileServer,
    file: &ServedFile,
) -> ApiResult<bool> {
    let storages = state
        .storages()
        .storages(StorageFilter {
            project: None,
            kind: Some(StorageKind::Import),
            storage_type: Some(storage_type),
        })
        .await?;
    let mut visible: HashMap<i64, bool> = HashMap::new();
    for storage in storages {
        if !server.holds(&storage.settings, file) {
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
