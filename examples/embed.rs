//! Run with: `cargo run --example embed`
//!
//! Embedding the storage API in an existing axum application that has its
//! own state, its own routes and its own user store: the host implements
//! the `storage_core::persist` traits on its own database (here
//! `storage_core::memory::InMemory` stands in for it) and merges
//! `storage_api::router` into its router.

#![allow(clippy::print_stdout, clippy::unwrap_used)] // an example prints and stops on failure

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use storage_connections::api::{router, ApiState};
use storage_connections::core::memory::InMemory;
use storage_connections::core::{Backends, RunnerConfig, SyncService};
use storage_connections::localfiles::{LocalFiles, LocalFilesBackend};

/// The host's own state: whatever the application already had.
#[derive(Clone)]
struct HostState {
    name: &'static str,
    db: Arc<InMemory>,
}

/// A route of the host, on the host's own state.
async fn about(State(host): State<HostState>) -> String {
    let tasks = host.db.task_count();
    format!("{}: {tasks} tasks imported from storages\n", host.name)
}

/// The host app with the storage API merged in.
fn app(db: Arc<InMemory>, sync: SyncService) -> Router {
    let storage_state = ApiState::new(sync, db.clone(), db.clone());
    let name = "my-labelling-app";
    Router::new()
        .route("/about", get(about))
        .with_state(HostState { name, db })
        .merge(router(storage_state))
}

/// The host's database (project 1 of organisation 10 and a user of that
/// organisation) and a sync service that writes into it.
fn setup(root: &std::path::Path) -> (Arc<InMemory>, SyncService) {
    let db = Arc::new(InMemory::new());
    assert_eq!(db.add_project(10), 1, "the first id");
    db.add_user(10, "secret-token");
    let local = LocalFiles::new(root).unwrap().with_serving_enabled(true);
    let backends = Backends::new().with(Arc::new(LocalFilesBackend::new(local)));
    let sync = SyncService::with_database(db.clone(), backends, RunnerConfig::default());
    sync.start();
    (db, sync)
}

#[tokio::main]
async fn main() {
    let root = std::env::temp_dir().join("embed-example-files");
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::write(root.join("images/a.jpg"), "x").unwrap();
    let (db, sync) = setup(&root);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .unwrap();
    println!("Listening on http://127.0.0.1:3000 (token: secret-token, project 1)");
    println!(
        "Try: curl -H 'Authorization: Token secret-token' -H 'Content-Type: application/json' \
         -d '{{\"project\":1,\"path\":\"{}/images\",\"use_blob_urls\":true}}' \
         http://127.0.0.1:3000/api/storages/localfiles",
        root.canonicalize().unwrap().display()
    );
    axum::serve(listener, app(db, sync)).await.unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::{json, Value};
    use tower::ServiceExt;

    /// One request as the host's user; the status and the body (text or JSON).
    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("Authorization", "Token secret-token")
            .header("Content-Type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = Value::String(String::from_utf8_lossy(&bytes).into_owned());
        (status, serde_json::from_slice(&bytes).unwrap_or(text))
    }

    #[tokio::test]
    async fn the_host_keeps_its_routes_and_the_storage_api_uses_its_database() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("images")).unwrap();
        for name in ["a.jpg", "b.jpg"] {
            std::fs::write(root.join("images").join(name), "x").unwrap();
        }
        let (db, sync) = setup(&root);
        let app = app(db.clone(), sync);

        let body = json!({"project": 1, "path": root.join("images"), "use_blob_urls": true});
        let (status, storage) = call(&app, "POST", "/api/storages/localfiles", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{storage}");
        let sync_uri = format!("/api/storages/localfiles/{}/sync", storage["id"]);
        assert_eq!(call(&app, "POST", &sync_uri, None).await.0, StatusCode::OK);
        for _ in 0..200 {
            if db.task_count() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(db.task_count(), 2, "the sync wrote into the host's db");

        // The host's own route and state still work.
        let (status, text) = call(&app, "GET", "/about", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(text, "my-labelling-app: 2 tasks imported from storages\n");
        // The host's users and projects decide access.
        let (status, _) = call(&app, "GET", "/api/storages/localfiles?project=2", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
