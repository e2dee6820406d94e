//! Storage URIs in task data: rewriting them to this server's resolver when
//! tasks are shown, and the resolver itself (`/tasks/{id}/resolve/`,
//! `/projects/{id}/resolve/` and their `/presign/` aliases), which redirects
//! to a signed URL (`presign=true`) or streams the object (`presign=false`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::json;
use storage_core::persist::{Caller, StorageFilter};
use storage_core::uri::{rewrite_uris_in_text, BucketUri};
use storage_core::{Error, Storage, StorageKind};

use crate::error::{ApiError, ApiResult};
use crate::extract::Authenticated;
use crate::serve::{serve_object, ServeOptions};
use crate::storages::query_param;
use crate::ApiState;

/// The import storages of a project that name objects by URI, with their
/// URI matchers, in backend order.
pub(crate) async fn bucket_storages(
    state: &ApiState,
    project: i64,
) -> ApiResult<Vec<(Storage, BucketUri)>> {
    let storages = state
        .storages()
        .storages(StorageFilter {
            project: Some(project),
            kind: Some(StorageKind::Import),
            storage_type: None,
        })
        .await?;
    let mut found = Vec::new();
    for backend in state.backends().iter() {
        for storage in storages.iter().filter(|s| s.storage_type == backend.name()) {
            if let Some(uri) = backend.bucket_uri(&storage.settings) {
                found.push((storage.clone(), uri));
            }
        }
    }
    Ok(found)
}

/// `text` (a string of task data) with every URI with `scheme` that one of
/// `storages` holds rewritten to
/// `<base>/tasks/<task>/resolve/?fileuri=<url-safe base64>`; `None` when
/// nothing was rewritten.
pub(crate) fn rewrite_text(
    text: &str,
    scheme: &str,
    task: i64,
    url_base: &str,
    storages: &[(Storage, BucketUri)],
) -> Option<String> {
    rewrite_uris_in_text(text, scheme, &mut |uri| {
        storages
            .iter()
            .any(|(_, bucket)| bucket.location(uri).is_some())
            .then(|| {
                format!(
                    "{url_base}/tasks/{task}/resolve/?fileuri={}",
                    URL_SAFE.encode(uri)
                )
            })
    })
}

/// `fileuri` as Label Studio sends it: URL-safe base64 of the URI (other
/// base64 alphabets and a percent-encoded URI are accepted too).
fn decode_fileuri(raw: &str) -> Option<String> {
    [&URL_SAFE, &URL_SAFE_NO_PAD, &STANDARD]
        .iter()
        .find_map(|engine| engine.decode(raw.trim()).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|uri| uri.contains("://"))
        .or_else(|| Some(raw.to_string()).filter(|uri| uri.contains("://")))
}

/// `GET /tasks/{id}/resolve/?fileuri=` (`TASK`) and
/// `/projects/{id}/resolve/?fileuri=` (and their `/presign/` aliases).
pub(crate) async fn resolve<const TASK: bool>(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let fileuri = required_fileuri(query.as_deref())?;
    let id: i64 = id.parse().map_err(|_| ApiError::not_found())?;
    let project = if TASK {
        let host = state.host().ok_or_else(ApiError::not_found)?;
        host.task(id)
            .await?
            .ok_or_else(ApiError::not_found)?
            .project
    } else {
        id
    };
    resolve_in_project(&state, &caller, project, &fileuri, &headers).await
}

fn required_fileuri(query: Option<&str>) -> ApiResult<String> {
    query_param(query, "fileuri")
        .filter(|f| !f.is_empty())
        .ok_or_else(|| ApiError::field("fileuri", "This query parameter is required."))
}

async fn resolve_in_project(
    state: &ApiState,
    caller: &Caller,
    project: i64,
    fileuri: &str,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    if !state.access().project_visible(caller, project).await? {
        return Err(ApiError::not_found());
    }
    let uri = decode_fileuri(fileuri)
        .ok_or_else(|| ApiError::field("fileuri", "Not a base64-encoded storage URI."))?;
    let storages = bucket_storages(state, project).await?;
    let Some((storage, location)) = storages
        .iter()
        .find_map(|(storage, bucket)| bucket.location(&uri).map(|location| (storage, location)))
    else {
        return Err(ApiError::not_found());
    };
    let source = state.sync().import_storage(storage).await.map_err(|err| {
        tracing::warn!(storage = storage.id, error = %err, "cannot open storage to resolve a URI");
        ApiError::not_found()
    })?;
    if storage.settings.bool("presign", true) {
        let minutes = storage.settings.int("presign_ttl").unwrap_or(1).max(1) as u64;
        let ttl = Duration::from_secs(minutes * 60);
        let url = match source.signed_url(&location, ttl).await {
            Ok(url) => Some(url),
            // A keyless storage signs nothing (its signature would borrow
            // the server's identity): its objects are streamed below.
            Err(Error::NotSupported { .. }) => None,
            Err(err) => {
                tracing::warn!(storage = storage.id, error = %err, "signing failed");
                return Err(ApiError::not_found());
            }
        };
        if let Some(url) = url {
            return redirect_to(&url, ttl);
        }
    }
    let store: Arc<dyn object_store::ObjectStore> = source.store();
    let options = ServeOptions {
        cache_control: Some("private, max-age=3600, must-revalidate"),
        store_etag: true,
    };
    let secrets = state
        .backend(&storage.storage_type)
        .map(|backend| {
            storage
                .settings
                .secret_values(&backend.fields(storage.kind))
        })
        .unwrap_or_default();
    serve_object(store, &location, headers, &options).await.map_err(|err| match err.redacted(&secrets) {
        Error::NotFound { .. } => ApiError::not_found(),
        other => {
            tracing::warn!(storage = storage.id, error = %other, "proxying from storage failed");
            ApiError::bare(
                StatusCode::FAILED_DEPENDENCY,
                json!({"error": "Storage stream failed while proxying data", "detail": other.to_string()}),
            )
        }
    })
}

/// The `303` to a signed URL, cacheable for its lifetime.
fn redirect_to(url: &str, ttl: Duration) -> ApiResult<Response> {
    let location = HeaderValue::from_str(url).map_err(|_| ApiError::not_found())?;
    let cache = HeaderValue::from_str(&format!("no-store, max-age={}", ttl.as_secs()))
        .map_err(|_| ApiError::not_found())?;
    Ok((
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location), (header::CACHE_CONTROL, cache)],
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fileuri_is_url_safe_base64_with_padding() {
        assert_eq!(
            URL_SAFE.encode("s3://pytest-s3-images/image1.jpg"),
            "czM6Ly9weXRlc3QtczMtaW1hZ2VzL2ltYWdlMS5qcGc="
        );
        assert_eq!(
            decode_fileuri("czM6Ly9weXRlc3QtczMtaW1hZ2VzL2ltYWdlMS5qcGc=").as_deref(),
            Some("s3://pytest-s3-images/image1.jpg")
        );
        assert_eq!(
            decode_fileuri("czM6Ly9weXRlc3QtczMtaW1hZ2VzL2ltYWdlMS5qcGc").as_deref(),
            Some("s3://pytest-s3-images/image1.jpg")
        );
        assert_eq!(
            decode_fileuri("s3://b/k.jpg").as_deref(),
            Some("s3://b/k.jpg")
        );
        assert_eq!(decode_fileuri("!!!"), None);
    }
}
