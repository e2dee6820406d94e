//! A real server on a loopback socket over a real SQLite file, with a
//! temporary local-files document root.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use storage_api::{host_router, router, ApiState, MetricsAccess};
use storage_core::persist::{StorageRepository, TaskSink};
use storage_core::{Backend, Backends, EndpointPolicy, RunnerConfig, SyncService};
use storage_db::SqliteDatabase;
use storage_localfiles::{LocalFiles, LocalFilesBackend};

pub const TOKEN: &str = "test-token-0123456789";

/// An HTTP client of one server with one token: JSON requests, the
/// project every test needs, and waits for a sync to finish.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
    /// Status, headers and body of every response to [`Api::call`], when
    /// recording.
    transcript: Option<Arc<Mutex<Vec<String>>>>,
}

impl Api {
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            token: token.into(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            transcript: None,
        }
    }

    /// The same client, recording every response to [`Api::call`].
    pub fn recording(mut self) -> Self {
        self.transcript = Some(Arc::default());
        self
    }

    /// The responses recorded so far (see [`Api::recording`]).
    pub fn transcript(&self) -> String {
        self.transcript
            .as_ref()
            .map(|t| t.lock().unwrap().join("\n"))
            .unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with `authorization` (a full header value) or none.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        authorization: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request
            .send()
            .await
            .unwrap_or_else(|err| panic!("{path}: {err}"))
    }

    /// Sends with this token; the status, headers and body as text.
    pub async fn call_text(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, String) {
        let authorization = format!("Token {}", self.token);
        let response = self
            .raw(method.clone(), path, body, Some(&authorization))
            .await;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        if let Some(transcript) = &self.transcript {
            transcript
                .lock()
                .unwrap()
                .push(format!("{method} {path} -> {status}\n{headers:?}\n{text}"));
        }
        (status, headers, text)
    }

    /// Sends with this token; the status and the JSON body (`null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, text) = self.call_text(method, path, body).await;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"))
        };
        (status, value)
    }

    /// A successful call's body.
    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(method, path, body).await;
        assert!(status.is_success(), "{path}: {status} {body}");
        body
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

    /// A new project with `tasks` (a JSON array) imported into it.
    pub async fn project_with(&self, tasks: Value) -> i64 {
        let project = self.project().await;
        self.import(project, tasks).await;
        project
    }

    /// Imports `tasks` (a JSON array) into the project (asserting 201).
    pub async fn import(&self, project: i64, tasks: Value) -> Value {
        let (status, body) = self
            .post(&format!("/api/projects/{project}/import"), tasks)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Annotates the project's first task with an empty result; the
    /// task's id and the annotation.
    pub async fn annotate_first_task(&self, project: i64) -> (i64, Value) {
        let (_, tasks) = self.get(&format!("/api/tasks?project={project}")).await;
        let task = tasks["tasks"][0]["id"].as_i64().unwrap();
        let (_, annotation) = self
            .post(
                &format!("/api/tasks/{task}/annotations"),
                json!({"result": []}),
            )
            .await;
        (task, annotation)
    }

    /// Creates a storage at `storages` (e.g. `/api/storages/localfiles`)
    /// and returns its path (`/api/storages/localfiles/<id>`).
    pub async fn create_storage(&self, storages: &str, body: Value) -> String {
        let (status, storage) = self.post(storages, body).await;
        assert_eq!(status, StatusCode::CREATED, "{storage}");
        format!("{storages}/{}", storage["id"])
    }

    /// Queues a sync of the storage at `storage_path` (asserting 200).
    pub async fn sync(&self, storage_path: &str) -> Value {
        let (status, body) = self.post(&format!("{storage_path}/sync"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Queues a sync and polls until it has finished.
    pub async fn sync_and_wait(&self, storage_path: &str) -> Value {
        self.sync(storage_path).await;
        self.wait_synced(storage_path).await
    }

    /// Polls the storage until its sync has finished; fails after 60 s.
    pub async fn wait_synced(&self, storage_path: &str) -> Value {
        self.wait_synced_within(storage_path, Duration::from_secs(60), String::new)
            .await
    }

    /// Polls the storage until its sync has finished; fails after
    /// `patience`, with `context()` (e.g. a server's log) in the message.
    pub async fn wait_synced_within(
        &self,
        storage_path: &str,
        patience: Duration,
        context: impl Fn() -> String,
    ) -> Value {
        let started = Instant::now();
        loop {
            let (status, storage) = self.get(storage_path).await;
            assert_eq!(status, StatusCode::OK, "{storage}");
            match storage["status"].as_str() {
                Some("completed" | "completed_with_errors" | "failed") => return storage,
                _ if started.elapsed() > patience => {
                    panic!(
                        "sync of {storage_path} did not finish: {storage}\n{}",
                        context()
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// A server in this process, as the storage-server binary builds it, on a
/// temporary SQLite file and document root.
pub struct Server {
    pub api: Api,
    pub root: PathBuf,
    pub db: Arc<SqliteDatabase>,
    pub sync: SyncService,
    dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl std::ops::Deref for Server {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// The storages and tasks the sync service writes through, made from the
/// database (a test may wrap it).
pub type Persistence =
    Box<dyn FnOnce(Arc<SqliteDatabase>) -> (Arc<dyn StorageRepository>, Arc<dyn TaskSink>) + Send>;

/// How [`Server::start_setup`] puts a server together.
pub struct Setup {
    pub runner: RunnerConfig,
    /// Bucket backends under test (local files are always there).
    pub backends: Vec<Arc<dyn Backend>>,
    /// The admin user's token.
    pub token: &'static str,
    /// `None`: the API's default.
    pub metrics: Option<MetricsAccess>,
    /// `None`: the API's default.
    pub max_body_bytes: Option<usize>,
    /// `None`: the database itself.
    pub persistence: Option<Persistence>,
    /// Around the router, as the binary adds its trace layers.
    pub layers: fn(axum::Router) -> axum::Router,
    /// Whether the [`Api`] records every response.
    pub record: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            runner: fast_runner(),
            backends: Vec::new(),
            token: TOKEN,
            metrics: None,
            max_body_bytes: Some(1024 * 1024),
            persistence: None,
            layers: |router| router,
            record: false,
        }
    }
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
        backends: Vec<Arc<dyn Backend>>,
    ) -> Self {
        Self::start_setup(
            dir,
            Setup {
                runner,
                backends,
                ..Setup::default()
            },
        )
        .await
    }

    /// Starts a server put together as `setup` says.
    pub async fn start_setup(dir: tempfile::TempDir, setup: Setup) -> Self {
        let root = dir.path().canonicalize().unwrap().join("files");
        std::fs::create_dir_all(&root).unwrap();
        let db = SqliteDatabase::open(&dir.path().join("storage.sqlite3"))
            .await
            .expect("open SQLite");
        let org = db.ensure_organization("default").await.unwrap();
        let admin = db.ensure_user("admin@localhost", org).await.unwrap();
        db.set_user_token(admin, setup.token).await.unwrap();
        let db = Arc::new(db);
        let local = LocalFiles::new(&root).unwrap().with_serving_enabled(true);
        let backends = setup
            .backends
            .into_iter()
            .fold(Backends::new(), Backends::with)
            .with(Arc::new(LocalFilesBackend::new(local)));
        let (storages, tasks): (Arc<dyn StorageRepository>, Arc<dyn TaskSink>) =
            match setup.persistence {
                Some(wrap) => wrap(db.clone()),
                None => (db.clone(), db.clone()),
            };
        let sync = SyncService::new(storages, tasks, db.clone(), backends, setup.runner)
            .with_export_outbox(db.clone())
            .with_shard_queue(db.clone());
        sync.recover(true).await.unwrap();
        sync.start();
        let mut state = ApiState::new(sync.clone(), db.clone(), db.clone())
            .with_host(db.clone())
            .with_administrators([admin])
            .with_webhooks(db.clone())
            .with_endpoint_policy(EndpointPolicy::allow_private());
        if let Some(bytes) = setup.max_body_bytes {
            state = state.with_max_body_bytes(bytes);
        }
        if let Some(metrics) = setup.metrics {
            state = state.with_metrics(metrics);
        }
        let app: axum::Router = axum::Router::new()
            .merge(router(state.clone()))
            .merge(host_router(state));
        let (base, server) = serve_on_loopback((setup.layers)(app)).await;
        let api = Api::new(base, setup.token);
        Self {
            api: if setup.record { api.recording() } else { api },
            root,
            db,
            sync,
            dir,
            server,
        }
    }

    /// Stops the server and its workers, handing back the data directory.
    pub async fn stop(self) -> tempfile::TempDir {
        let Self {
            sync, server, dir, ..
        } = self;
        sync.shutdown().await;
        server.abort();
        let _ = server.await;
        dir
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

    /// Writes `files` one-byte `.jpg` files into `folder` below the
    /// document root and creates a Files-mode local-files storage of it;
    /// returns the storage's path.
    pub async fn folder_storage(&self, project: i64, folder: &str, files: usize) -> String {
        let dir = self.root.join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..files {
            std::fs::write(dir.join(format!("f{i:05}.jpg")), b"x").unwrap();
        }
        self.local_storage(project, folder, true).await
    }

    /// Creates a local-files export storage into `out` below the document
    /// root, waits for the first (empty) export its creation runs, then
    /// annotates the first `annotated` tasks of the project; returns the
    /// storage's path.
    pub async fn export_after_annotating(&self, project: i64, annotated: usize) -> String {
        std::fs::create_dir_all(self.root.join("out")).unwrap();
        let path = self
            .create_storage(
                "/api/storages/export/localfiles",
                json!({"project": project, "path": self.path("out")}),
            )
            .await;
        self.wait_synced(&path).await;
        self.annotate_tasks(project, annotated).await;
        path
    }

    /// Annotates the first `count` tasks of the project with an empty
    /// result; the annotations' ids.
    pub async fn annotate_tasks(&self, project: i64, count: usize) -> Vec<i64> {
        let (_, tasks) = self
            .get(&format!("/api/tasks?project={project}&page_size={count}"))
            .await;
        let mut annotations = Vec::new();
        for task in tasks["tasks"].as_array().unwrap().iter().take(count) {
            let (status, annotation) = self
                .post(
                    &format!("/api/tasks/{}/annotations", task["id"]),
                    json!({"result": []}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{annotation}");
            annotations.push(annotation["id"].as_i64().unwrap());
        }
        annotations
    }

    /// Creates a local-files import storage of `folder` below the document
    /// root, in Files mode (`use_blob_urls`) or Tasks mode; returns its
    /// path (see [`storage_id`]).
    pub async fn local_storage(&self, project: i64, folder: &str, use_blob_urls: bool) -> String {
        self.create_storage(
            "/api/storages/localfiles",
            json!({"project": project, "path": self.path(folder), "use_blob_urls": use_blob_urls}),
        )
        .await
    }
}

/// The id at the end of a storage path (`/api/storages/<type>/<id>`).
pub fn storage_id(path: &str) -> i64 {
    path.rsplit('/')
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no storage id at the end of {path}"))
}

/// Serves `app` on a free loopback port: its base URL and the task.
pub async fn serve_on_loopback(app: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (base, server)
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

/// The checks of a validation report (`validate?report=true`) as
/// `name=status`, in order; each has a duration and a message.
pub fn report_checks(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks: {report}"))
        .iter()
        .map(|c| {
            assert!(c["duration_ms"].is_u64() && c["message"].is_string(), "{c}");
            format!(
                "{}={}",
                c["name"].as_str().unwrap(),
                c["status"].as_str().unwrap()
            )
        })
        .collect()
}

/// The message of check `name` of a validation report.
pub fn report_message<'a>(report: &'a Value, name: &str) -> &'a str {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["message"].as_str())
        .unwrap_or_else(|| panic!("no check {name}: {report}"))
}
