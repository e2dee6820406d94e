//! A real server on a loopback socket over a real SQLite file, with a
//! temporary local-files document root.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use storage_api::{host_router, router, ApiState};
use storage_core::{Backends, RunnerConfig, SyncService};
use storage_db::SqliteDatabase;
use storage_localfiles::{LocalFiles, LocalFilesBackend};

pub const TOKEN: &str = "test-token-0123456789";

pub struct Server {
    pub base: String,
    pub root: PathBuf,
    pub db: Arc<SqliteDatabase>,
    pub sync: SyncService,
    pub client: reqwest::Client,
    dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

pub fn fast_runner() -> RunnerConfig {
    RunnerConfig {
        progress_interval: Duration::from_millis(100),
        poll_interval: Duration::from_millis(100),
        ..RunnerConfig::default()
    }
}

impl Server {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, fast_runner()).await
    }

    /// Starts a server whose data lives in `dir` (so a test can restart one
    /// on the same database).
    pub async fn start_in(dir: tempfile::TempDir, runner: RunnerConfig) -> Self {
        Self::start_with(dir, runner, Vec::new()).await
    }

    /// Starts a server that also offers `backends` (bucket backends under test).
    pub async fn start_with(
        dir: tempfile::TempDir,
        runner: RunnerConfig,
        backends: Vec<Arc<dyn storage_core::Backend>>,
    ) -> Self {
        let root = dir.path().canonicalize().unwrap().join("files");
        std::fs::create_dir_all(&root).unwrap();
        let db = SqliteDatabase::open(&dir.path().join("storage.sqlite3"))
            .await
            .expect("open SQLite");
        let org = db.ensure_organization("default").await.unwrap();
        let admin = db.ensure_user("admin@localhost", org).await.unwrap();
        db.set_user_token(admin, TOKEN).await.unwrap();
        let db = Arc::new(db);
        let local = LocalFiles::new(&root).unwrap().with_serving_enabled(true);
        let backends = backends
            .into_iter()
            .fold(Backends::new(), Backends::with)
            .with(Arc::new(LocalFilesBackend::new(local)));
        let sync = SyncService::new(db.clone(), db.clone(), db.clone(), backends, runner);
        sync.recover(true).await.unwrap();
        sync.start();
        let state = ApiState::new(sync.clone(), db.clone(), db.clone())
            .with_host(db.clone())
            .with_max_body_bytes(1024 * 1024);
        let app: axum::Router = axum::Router::new()
            .merge(router(state.clone()))
            .merge(host_router(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base,
            root,
            db,
            sync,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            dir,
            server,
        }
    }

    /// Stops the server and its workers, handing back the data directory.
    pub async fn stop(self) -> tempfile::TempDir {
        self.sync.shutdown().await;
        self.server.abort();
        self.dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, self.url(path))
            .header("Authorization", format!("Token {TOKEN}"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("{path}: not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Writes `files` (relative path, contents) below the document root.
    pub fn write_files(&self, files: &[(&str, &str)]) {
        for (path, body) in files {
            let full = self.root.join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, body).unwrap();
        }
    }

    pub fn path(&self, relative: &str) -> String {
        self.root.join(relative).to_string_lossy().into_owned()
    }

    pub async fn project(&self) -> i64 {
        let (status, project) = self
            .post(
                "/api/projects",
                json!({"title": "p", "label_config": "<View><Image name=\"image\" value=\"$image\"/></View>"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{project}");
        project["id"].as_i64().unwrap()
    }

    /// Polls the storage until its sync has finished; fails after 60 s.
    pub async fn wait_synced(&self, storage_path: &str) -> Value {
        let started = Instant::now();
        loop {
            let (status, storage) = self.get(storage_path).await;
            assert_eq!(status, StatusCode::OK, "{storage}");
            match storage["status"].as_str() {
                Some("completed" | "completed_with_errors" | "failed") => return storage,
                _ if started.elapsed() > Duration::from_secs(60) => {
                    panic!("sync of {storage_path} did not finish: {storage}")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// Asserts Label Studio's error envelope and returns its `validation_errors`.
pub fn envelope(status: StatusCode, body: &Value, expected: StatusCode) -> Value {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["status_code"], expected.as_u16(), "{body}");
    assert!(
        body["id"].is_string() && body["version"].is_string(),
        "{body}"
    );
    assert!(body["exc_info"].is_null(), "{body}");
    body.get("validation_errors")
        .cloned()
        .unwrap_or(Value::Null)
}

pub fn exists(path: impl AsRef<Path>) -> bool {
    path.as_ref().exists()
}
