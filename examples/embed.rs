//! Run with: `cargo run --example embed`
//!
//! Embedding the storage API in an existing axum application that has its
//! own state, its own routes and its own user store: the host implements
//! the `storage_core::persist` traits (here, a short in-memory database)
//! and merges `storage_api::router` into its router.

#![allow(clippy::print_stdout, clippy::unwrap_used)] // an example prints and stops on failure

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use storage_connections::api::{router, ApiState};
use storage_connections::core::persist::{
    AnnotationSource, Authenticator, Caller, ExportedAnnotation, NewTask, ProjectAccess,
    StorageFilter, StorageRepository, SyncGuard, TaskSink,
};
use storage_connections::core::{
    Backends, NewStorage, Result, RunnerConfig, Storage, SyncService, SyncState, SyncStatus,
};
use storage_connections::localfiles::{LocalFiles, LocalFilesBackend};

/// The host's own state: whatever the application already had.
#[derive(Clone)]
struct HostState {
    name: &'static str,
    db: Arc<MemoryDb>,
}

/// The host's data: its users and projects, and what the storage system
/// needs to keep (storages, tasks with their links, annotations).
#[derive(Debug, Default)]
struct MemoryDb {
    /// token -> (user id, organisation id)
    users: HashMap<String, (i64, i64)>,
    /// project id -> organisation id
    projects: HashMap<i64, i64>,
    storages: Mutex<Vec<Storage>>,
    tasks: Mutex<Vec<LinkedTask>>,
    /// (storage, key) of large task files being streamed.
    unfinished: Mutex<HashSet<(i64, String)>>,
}

/// A task and the object it came from.
#[derive(Debug)]
struct LinkedTask {
    storage: i64,
    key: String,
    row: Option<i64>,
    #[allow(dead_code)] // a real host shows it
    data: serde_json::Map<String, Value>,
}

#[async_trait]
impl Authenticator for MemoryDb {
    async fn authenticate(&self, token: &str) -> Result<Option<Caller>> {
        // A real host compares hashes in constant time; see storage-db.
        Ok(self
            .users
            .get(token)
            .map(|&(user_id, organization_id)| Caller {
                user_id,
                organization_id,
            }))
    }
}

#[async_trait]
impl ProjectAccess for MemoryDb {
    async fn project_visible(&self, caller: &Caller, project: i64) -> Result<bool> {
        Ok(self.projects.get(&project) == Some(&caller.organization_id))
    }
}

#[async_trait]
impl StorageRepository for MemoryDb {
    async fn insert_storage(&self, new: NewStorage) -> Result<Storage> {
        let mut storages = self.storages.lock().unwrap();
        let storage = Storage {
            id: storages.iter().map(|s| s.id).max().unwrap_or(0) + 1,
            kind: new.kind,
            storage_type: new.storage_type,
            project: new.project,
            title: new.title,
            description: new.description,
            created_at: chrono::Utc::now(),
            synchronizable: new.synchronizable,
            settings: new.settings,
            sync: SyncState::default(),
        };
        storages.push(storage.clone());
        Ok(storage)
    }

    async fn storage(&self, id: i64) -> Result<Option<Storage>> {
        Ok(self
            .storages
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.id == id)
            .cloned())
    }

    async fn storages(&self, filter: StorageFilter<'_>) -> Result<Vec<Storage>> {
        Ok(self
            .storages
            .lock()
            .unwrap()
            .iter()
            .filter(|s| filter.project.is_none_or(|p| s.project == p))
            .filter(|s| filter.kind.is_none_or(|k| s.kind == k))
            .filter(|s| filter.storage_type.is_none_or(|t| s.storage_type == t))
            .cloned()
            .collect())
    }

    async fn update_storage(&self, storage: &Storage) -> Result<()> {
        if let Some(stored) = self
            .storages
            .lock()
            .unwrap()
            .iter_mut()
            .find(|s| s.id == storage.id)
        {
            let sync = stored.sync.clone();
            *stored = Storage {
                sync,
                ..storage.clone()
            };
        }
        Ok(())
    }

    async fn delete_storage(&self, id: i64) -> Result<bool> {
        let mut storages = self.storages.lock().unwrap();
        let before = storages.len();
        storages.retain(|s| s.id != id);
        self.tasks.lock().unwrap().retain(|t| t.storage != id);
        Ok(storages.len() < before)
    }

    async fn storages_with_status(&self, statuses: &[SyncStatus]) -> Result<Vec<Storage>> {
        Ok(self
            .storages
            .lock()
            .unwrap()
            .iter()
            .filter(|s| statuses.contains(&s.sync.status))
            .cloned()
            .collect())
    }

    async fn update_sync(&self, id: i64, expected: &SyncGuard, state: &SyncState) -> Result<bool> {
        // Compare-and-set: the one rule a repository must keep.
        let mut storages = self.storages.lock().unwrap();
        match storages.iter_mut().find(|s| s.id == id) {
            Some(s) if SyncGuard::of(&s.sync) == *expected => {
                s.sync = state.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl TaskSink for MemoryDb {
    async fn linked_keys(&self, storage_id: i64, keys: &[String]) -> Result<HashMap<String, u64>> {
        let unfinished = self.unfinished.lock().unwrap();
        let mut linked = HashMap::new();
        for task in self.tasks.lock().unwrap().iter().filter(|t| {
            t.storage == storage_id
                && keys.contains(&t.key)
                && !unfinished.contains(&(storage_id, t.key.clone()))
        }) {
            *linked.entry(task.key.clone()).or_default() += 1;
        }
        Ok(linked)
    }

    async fn begin_object(&self, storage_id: i64, key: &str) -> Result<()> {
        self.unfinished
            .lock()
            .unwrap()
            .insert((storage_id, key.to_string()));
        Ok(())
    }

    async fn finish_object(&self, storage_id: i64, key: &str) -> Result<()> {
        self.unfinished
            .lock()
            .unwrap()
            .remove(&(storage_id, key.to_string()));
        Ok(())
    }

    async fn create_tasks(&self, _project: i64, storage_id: i64, new: &[NewTask]) -> Result<u64> {
        // One lock for the batch: all or nothing, and already-linked rows skipped.
        let mut tasks = self.tasks.lock().unwrap();
        let mut created = 0;
        for task in new {
            let linked = tasks.iter().any(|t| {
                t.storage == storage_id && t.key == task.link.key && t.row == task.link.row_index
            });
            if !linked {
                tasks.push(LinkedTask {
                    storage: storage_id,
                    key: task.link.key.clone(),
                    row: task.link.row_index,
                    data: task.data.clone(),
                });
                created += 1;
            }
        }
        Ok(created)
    }
}

#[async_trait]
impl AnnotationSource for MemoryDb {
    async fn annotations_for_export(
        &self,
        _: i64,
        _: i64,
        _: usize,
    ) -> Result<Vec<ExportedAnnotation>> {
        Ok(Vec::new())
    }
    async fn count_annotations(&self, _: i64) -> Result<u64> {
        Ok(0)
    }
    async fn annotation_for_export(&self, _: i64) -> Result<Option<ExportedAnnotation>> {
        Ok(None)
    }
}

/// A route of the host, on the host's own state.
async fn about(State(host): State<HostState>) -> String {
    let tasks = host.db.tasks.lock().unwrap().len();
    format!("{}: {tasks} tasks imported from storages\n", host.name)
}

/// The host app with the storage API merged in.
fn app(db: Arc<MemoryDb>, sync: SyncService) -> Router {
    let storage_state = ApiState::new(sync, db.clone(), db.clone());
    Router::new()
        .route("/about", get(about))
        .with_state(HostState {
            name: "my-labelling-app",
            db,
        })
        .merge(router(storage_state))
}

fn setup(root: &std::path::Path) -> (Arc<MemoryDb>, SyncService) {
    let db = Arc::new(MemoryDb {
        users: HashMap::from([("secret-token".to_string(), (1, 10))]),
        projects: HashMap::from([(1, 10)]),
        ..MemoryDb::default()
    });
    let local = LocalFiles::new(root).unwrap().with_serving_enabled(true);
    let backends = Backends::new().with(Arc::new(LocalFilesBackend::new(local)));
    let sync = SyncService::new(
        db.clone(),
        db.clone(),
        db.clone(),
        backends,
        RunnerConfig::default(),
    );
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
         -d '{{\"project\":1,\"path\":\"{}/images\",\"use_blob_urls\":true}}' http://127.0.0.1:3000/api/storages/localfiles",
        root.canonicalize().unwrap().display()
    );
    axum::serve(listener, app(db, sync)).await.unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

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
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
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

        let body =
            serde_json::json!({"project": 1, "path": root.join("images"), "use_blob_urls": true});
        let (status, storage) = call(&app, "POST", "/api/storages/localfiles", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{storage}");
        let (status, _) = call(
            &app,
            "POST",
            &format!("/api/storages/localfiles/{}/sync", storage["id"]),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        for _ in 0..200 {
            if db.tasks.lock().unwrap().len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            db.tasks.lock().unwrap().len(),
            2,
            "the sync wrote into the host's database"
        );

        // The host's own route and state still work.
        let response = app
            .clone()
            .oneshot(Request::get("/about").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let text = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(text, "my-labelling-app: 2 tasks imported from storages\n");
        // The host's users and projects decide access.
        let (status, _) = call(&app, "GET", "/api/storages/localfiles?project=2", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
