//! The notification endpoint of import storages whose provider pushes
//! object changes (Pub/Sub for `gcs`, `gcs_sa`, `gcswif`; Event Grid for
//! `azure`, `azure_spi`), and the route that hands out its token.
//!
//! A push carries no user credentials, so each storage has its own token:
//! made by `POST …/{id}/notifications/token`, shown once, kept as its
//! SHA-256 only, and checked in constant time. A push is answered 200 only
//! once its changes are committed; 503 (with `Retry-After`) while the
//! storage's sync runs or a lookup failed for a temporary reason, so the
//! provider delivers it again.

use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use storage_core::events::{PushFormat, PushedEvents};
use storage_core::jobs::EventsApplied;
use storage_core::{Retry, Storage, StorageKind};

use crate::extract::{Authenticated, JsonValue};
use crate::storages::{load_str, query_param};
use crate::{ApiError, ApiResult, ApiState};

/// The settings key of a storage's notification token's SHA-256 (hex). Not
/// a field of the wire format: never shown, kept by updates.
pub(crate) const TOKEN_HASH_KEY: &str = "notification_token_sha256";

/// How long a push waits for the storage's sync before it is answered 503.
const WAIT_FOR_SYNC: Duration = Duration::from_secs(5);

/// `POST /api/storages/{type}/{id}/notifications/token`: a new token for
/// the storage's notification endpoint (the previous one stops working),
/// shown this once.
pub(crate) async fn new_token(
    State(state): State<ApiState>,
    Authenticated(caller): Authenticated,
    Path((storage_type, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let backend = state.backend(&storage_type)?.clone();
    let Some(format) = backend.push_format() else {
        return Err(ApiError::not_found());
    };
    let mut storage = load_str(&state, &caller, StorageKind::Import, backend.name(), &id).await?;
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    storage
        .settings
        .set(TOKEN_HASH_KEY, Value::String(sha256_hex(&token)));
    state.storages().update_storage(&storage).await?;
    tracing::info!(storage = storage.id, "notification token replaced");
    let endpoint = format!(
        "/api/storages/{}/{}/notifications?token={token}",
        backend.name(),
        storage.id
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": token, "endpoint": endpoint, "service": format.service})),
    )
        .into_response())
}

/// `POST /api/storages/{type}/{id}/notifications?token=…`: a provider's
/// push of object changes, applied before it is answered.
pub(crate) async fn push(
    State(state): State<ApiState>,
    Path((storage_type, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    JsonValue(body): JsonValue,
) -> ApiResult<Response> {
    let (storage, format) =
        authorized(&state, &storage_type, &id, query.as_deref(), &headers).await?;
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let batch = match (format.parse)(&storage.settings, &body) {
        Ok(PushedEvents::Handshake(answer)) => {
            tracing::info!(storage = storage.id, "notification subscription validated");
            return Ok(Json(answer).into_response());
        }
        Ok(PushedEvents::Batch(batch)) => batch,
        Err(err) => {
            tracing::warn!(storage = storage.id, error = %err, "a push that is not a notification was refused");
            state.sync().metrics().push_refused(&storage.storage_type);
            return Err(err.into());
        }
    };
    let started = Instant::now();
    loop {
        match state.sync().apply_events(storage.id, &batch).await {
            Ok(EventsApplied::Applied(applied)) => {
                let c = &applied.counts;
                let p = &applied.import.progress;
                return Ok(Json(json!({
                    "received": c.received, "applied": c.applied, "ignored": c.ignored,
                    "failed": c.failed, "tasks_created": p.created, "tasks_updated": p.updated,
                    "tasks_deleted": p.deleted, "tasks_marked": p.marked,
                }))
                .into_response());
            }
            Ok(EventsApplied::Busy) if started.elapsed() < WAIT_FOR_SYNC => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(EventsApplied::Busy) => {
                return Ok(retry_later(
                    "The storage's sync is queued or running; events are applied after it. \
                     Deliver the push again.",
                ))
            }
            Err(err) if err.retry() == Retry::Temporary => {
                tracing::warn!(storage = storage.id, error = %err, "a push could not be applied now");
                return Ok(retry_later(&format!(
                    "The changes could not be applied now ({err}). Deliver the push again."
                )));
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// `OPTIONS /api/storages/{type}/{id}/notifications?token=…`: the
/// CloudEvents webhook handshake (Event Grid with the CloudEvents schema):
/// the origin that asks is allowed.
pub(crate) async fn allow_origin(
    State(state): State<ApiState>,
    Path((storage_type, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    authorized(&state, &storage_type, &id, query.as_deref(), &headers).await?;
    let mut response = StatusCode::OK.into_response();
    if let Some(origin) = headers.get("webhook-request-origin") {
        response
            .headers_mut()
            .insert("webhook-allowed-origin", origin.clone());
        response
            .headers_mut()
            .insert("webhook-allowed-rate", HeaderValue::from_static("*"));
    }
    Ok(response)
}

/// The import storage a push is for and how its pushes read, if the push
/// proves it may: the storage's notification token (`?token=`), or a
/// credential of the provider the backend verifies (Pub/Sub's OIDC token
/// for a storage with `pubsub_service_account`). 401 without either, 403
/// with a wrong one, and 403 too for a storage that does not exist or has
/// no token (so a push cannot probe which storages exist).
async fn authorized(
    state: &ApiState,
    storage_type: &str,
    id: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> ApiResult<(Storage, PushFormat)> {
    let backend = state.backend(storage_type)?;
    let Some(format) = backend.push_format() else {
        return Err(ApiError::not_found());
    };
    let token = query_param(query, "token").filter(|t| !t.is_empty());
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("Bearer "));
    if token.is_none() && authorization.is_none() {
        state.sync().metrics().push_refused(backend.name());
        return Err(ApiError::unauthenticated(
            "The notification token is missing: push to the endpoint that POST \
             …/notifications/token returned, ?token= included (or, for Pub/Sub, with the \
             OIDC token of the storage's pubsub_service_account).",
        ));
    }
    let storage = match id.parse::<i64>() {
        Ok(id) => state.storages().storage(id).await?,
        Err(_) => None,
    }
    .filter(|s| s.kind == StorageKind::Import && s.storage_type == backend.name());
    let refused = |why: String| {
        tracing::warn!(storage_type, id, "a push was refused: {why}");
        state.sync().metrics().push_refused(backend.name());
        ApiError::new(StatusCode::FORBIDDEN, why)
    };
    let Some(storage) = storage else {
        return Err(refused(
            "The notification token does not match this storage.".into(),
        ));
    };
    if let Some(token) = token {
        let matches = storage
            .settings
            .str(TOKEN_HASH_KEY)
            .is_some_and(|expected| {
                bool::from(expected.as_bytes().ct_eq(sha256_hex(&token).as_bytes()))
            });
        return if matches {
            Ok((storage, format))
        } else {
            Err(refused(
                "The notification token does not match this storage.".into(),
            ))
        };
    }
    match backend
        .push_authenticated(&storage.settings, authorization.unwrap_or_default())
        .await
    {
        Ok(true) => Ok((storage, format)),
        Ok(false) => Err(refused(
            "This storage takes no OIDC token (set pubsub_service_account and \
             pubsub_audience), and the push has no ?token=."
                .into(),
        )),
        Err(err) => Err(refused(err.to_string())),
    }
}

fn retry_later(detail: &str) -> Response {
    let mut response = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, detail).into_response();
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from_static("5"));
    response
}

fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
