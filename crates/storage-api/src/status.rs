//! The unauthenticated status routes: `/health` (load balancers, Kubernetes
//! probes, the legacy SDK's `check_connection()`) and `/api/version`
//! (read by the legacy SDK's `Client` when it is built and by SDK 2's
//! `versions.get()`).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::error::VERSION;
use crate::ApiState;

/// The Label Studio release whose API this server speaks: what
/// `/api/version` reports as `release`, so clients that compare versions
/// treat it as that release.
pub const LABEL_STUDIO_API_VERSION: &str = "1.23.2";

/// How long `/health` waits for the database: a probe must get an answer
/// (503) rather than hang with the database.
const DATABASE_DEADLINE: Duration = Duration::from_secs(5);

/// `GET /health`: `200 {"status": "UP", "database": "UP"}`, or 503 with
/// `"DOWN"` when the database does not answer within five seconds. Label
/// Studio answers `{"status": "UP"}` whatever its database does.
pub(crate) async fn health(State(state): State<ApiState>) -> (StatusCode, Json<Value>) {
    let failure = match tokio::time::timeout(DATABASE_DEADLINE, state.storages().ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(err.to_string()),
        Err(_) => Some(format!(
            "no answer within {} s",
            DATABASE_DEADLINE.as_secs()
        )),
    };
    match failure {
        None => (
            StatusCode::OK,
            Json(json!({"status": "UP", "database": "UP"})),
        ),
        Some(reason) => {
            // The reason is logged, not answered: the route is public.
            tracing::warn!(%reason, "health check: the database is unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "DOWN", "database": "DOWN"})),
            )
        }
    }
}

/// `GET /api/version`: Label Studio's shape (every key its clients read),
/// plus this server's own version under `storage-connections`.
pub(crate) async fn version() -> Json<Value> {
    let short = LABEL_STUDIO_API_VERSION
        .rsplit_once('.')
        .map_or(LABEL_STUDIO_API_VERSION, |(major_minor, _)| major_minor);
    Json(json!({
        "release": LABEL_STUDIO_API_VERSION,
        "edition": "Community",
        "label-studio-os-package": {
            "version": LABEL_STUDIO_API_VERSION,
            "short_version": short,
            "latest_version_from_pypi": null,
            "latest_version_upload_time": null,
            "current_version_is_outdated": false,
        },
        "label-studio-os-backend": {},
        "label-studio-frontend": {},
        "dm2": {},
        "label-studio-converter": {},
        "lsf": {},
        "backend": {},
        "storage-connections": {"version": VERSION},
    }))
}
