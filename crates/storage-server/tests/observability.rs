//! Metrics, sync log fields and secrets over a real socket, a real SQLite
//! file and (for secrets) the S3 and GCS emulators started by
//! `./scripts/test`.
//!
//! The logs are captured by this binary's global tracing subscriber (JSON,
//! every level down to TRACE, span fields on every line, `log` records
//! included), the one place that also sees the events of sqlx's worker
//! threads. Hence these tests live in their own binary and run one at a
//! time ([`serial`]).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers stop on the first failure

mod support;

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use support::buckets::s3_builder;
use support::Server;

use async_trait::async_trait;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use storage_api::{MetricsAccess, MetricsToken};
use storage_core::import::ImportConfig;
use storage_core::persist::{NewTask, StorageFilter, StorageRepository, SyncGuard, TaskSink};
use storage_core::{
    Backend, EndpointPolicy, NewStorage, RunnerConfig, Storage, SyncState, SyncStatus,
};
use storage_db::SqliteDatabase;
use storage_gcs::{GcsBackend, GcsOptions};
use storage_s3::{S3Backend, S3Options};
use storage_testing::gcs_shim::{GcsShim, TEST_CLIENT_EMAIL, TEST_PRIVATE_KEY_PEM};
use storage_testing::unique_prefix;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};

const TOKEN: &str = "observability-api-token-5c1e4a";

// ---------------------------------------------------------------- logs

/// Everything this binary logs, one JSON object per line.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static CAPTURE: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        // The server binary's JSON format (storage_server::init_logging), at TRACE.
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || Appender(sink.clone()))
            .try_init()
            .expect("the only global subscriber of this test binary");
        buffer
    })
}

struct Appender(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Appender {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log lines written since it was made.
struct Logs {
    from: usize,
}

impl Logs {
    fn start() -> Self {
        let from = captured().lock().unwrap().len();
        Self { from }
    }

    fn text(&self) -> String {
        let buffer = captured().lock().unwrap();
        String::from_utf8_lossy(&buffer[self.from..]).into_owned()
    }

    fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
            })
            .collect()
    }

    /// Waits (polling memory, so the wait itself logs nothing) until a line
    /// with this message has been logged; fails after 60 s.
    async fn wait_for(&self, message: &str) {
        let started = Instant::now();
        while !self
            .lines()
            .iter()
            .any(|l| l["fields"]["message"] == message)
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no {message:?} logged in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One test at a time: they share the captured log.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));
    captured();
    LOCK.lock().await
}

// ---------------------------------------------------------------- server

/// The repository and task sink of the server, with a probe: every call
/// logs a TRACE line where it is made (so the line shows the span of its
/// caller) and, when gated, the first task write waits for the job's
/// heartbeat to have written progress, so the heartbeat's lines surely fall
/// inside the job.
#[derive(Debug)]
struct Probe {
    db: Arc<SqliteDatabase>,
    heartbeat: Option<tokio::sync::watch::Sender<bool>>,
}

#[async_trait]
impl StorageRepository for Probe {
    async fn insert_storage(&self, new: NewStorage) -> storage_core::Result<Storage> {
        self.db.insert_storage(new).await
    }
    async fn storage(&self, id: i64) -> storage_core::Result<Option<Storage>> {
        self.db.storage(id).await
    }
    async fn storages(&self, filter: StorageFilter<'_>) -> storage_core::Result<Vec<Storage>> {
        self.db.storages(filter).await
    }
    async fn update_storage(&self, storage: &Storage) -> storage_core::Result<()> {
        self.db.update_storage(storage).await
    }
    async fn delete_storage(&self, id: i64) -> storage_core::Result<bool> {
        self.db.delete_storage(id).await
    }
    async fn storages_with_status(
        &self,
        statuses: &[SyncStatus],
    ) -> storage_core::Result<Vec<Storage>> {
        self.db.storages_with_status(statuses).await
    }
    async fn update_sync(
        &self,
        id: i64,
        expected: &SyncGuard,
        state: &SyncState,
    ) -> storage_core::Result<bool> {
        let heartbeat =
            expected.status == SyncStatus::InProgress && state.status == SyncStatus::InProgress;
        tracing::trace!(target: "probe", id, heartbeat, "update_sync");
        let saved = self.db.update_sync(id, expected, state).await?;
        if let (true, Some(seen)) = (heartbeat && saved, &self.heartbeat) {
            seen.send_replace(true);
        }
        Ok(saved)
    }
}

#[async_trait]
impl TaskSink for Probe {
    async fn linked_keys(
        &self,
        storage_id: i64,
        keys: &[String],
    ) -> storage_core::Result<HashMap<String, u64>> {
        tracing::trace!(target: "probe", storage_id, "linked_keys");
        self.db.linked_keys(storage_id, keys).await
    }
    async fn begin_object(&self, storage_id: i64, key: &str) -> storage_core::Result<()> {
        self.db.begin_object(storage_id, key).await
    }
    async fn finish_object(&self, storage_id: i64, key: &str) -> storage_core::Result<()> {
        self.db.finish_object(storage_id, key).await
    }
    async fn create_tasks(
        &self,
        project: i64,
        storage_id: i64,
        tasks: Vec<NewTask>,
    ) -> storage_core::Result<u64> {
        if let Some(seen) = &self.heartbeat {
            let mut seen = seen.subscribe();
            tokio::time::timeout(Duration::from_secs(30), seen.wait_for(|s| *s))
                .await
                .expect("the job's heartbeat wrote no progress within 30 s")
                .unwrap();
        }
        tracing::trace!(target: "probe", storage_id, "create_tasks");
        self.db.create_tasks(project, storage_id, tasks).await
    }
}

struct Setup {
    runner: RunnerConfig,
    backends: Vec<Arc<dyn Backend>>,
    metrics: MetricsAccess,
    gate_on_heartbeat: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            runner: RunnerConfig {
                progress_interval: Duration::from_millis(100),
                poll_interval: Duration::from_millis(100),
                ..RunnerConfig::default()
            },
            backends: Vec::new(),
            metrics: MetricsAccess::default(),
            gate_on_heartbeat: false,
        }
    }
}

/// A server as the storage-server binary builds it (trace and
/// sensitive-header layers included) writing through the [`Probe`], and an
/// API client that records every response it gets.
async fn start_server(setup: Setup) -> Server {
    let heartbeat = setup
        .gate_on_heartbeat
        .then(|| tokio::sync::watch::channel(false).0);
    let persistence: support::Persistence = Box::new(move |db| {
        let probe = Arc::new(Probe { db, heartbeat });
        (probe.clone(), probe)
    });
    let setup = support::Setup {
        runner: setup.runner,
        backends: setup.backends,
        token: TOKEN,
        metrics: Some(setup.metrics),
        max_body_bytes: None,
        persistence: Some(persistence),
        layers: trace_layers,
        record: true,
    };
    Server::start_setup(tempfile::tempdir().unwrap(), setup).await
}

/// Stricter than the binary: headers are logged, so only the sensitive
/// marking keeps the token out.
fn trace_layers(app: axum::Router) -> axum::Router {
    let trace = TraceLayer::new_for_http()
        .make_span_with(DefaultMakeSpan::new().include_headers(true))
        .on_response(DefaultOnResponse::new().include_headers(true));
    app.layer(trace)
        .layer(SetSensitiveRequestHeadersLayer::new([
            http::header::AUTHORIZATION,
        ]))
}

impl Server {
    async fn scrape(&self) -> Metrics {
        let (status, headers, text) = self.call_text(Method::GET, "/metrics", None).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(headers["content-type"], storage_core::metrics::CONTENT_TYPE);
        Metrics::parse(&text)
    }
}

// ---------------------------------------------------------------- metrics parsing

/// The samples of an exposition, keyed `name{label="value",...}` with the
/// labels sorted. Parsing is strict: a line that is not a HELP, TYPE, UNIT,
/// EOF or well-formed sample of the family last declared fails the test.
#[derive(Debug)]
struct Metrics {
    samples: BTreeMap<String, f64>,
    text: String,
}

impl Metrics {
    fn parse(text: &str) -> Self {
        let meta =
            regex::Regex::new(r"^# (HELP|TYPE|UNIT) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$").unwrap();
        let sample = regex::Regex::new(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$").unwrap();
        let label =
            regex::Regex::new(r#"^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"(?:,|$)"#).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.last(),
            Some(&"# EOF"),
            "an OpenMetrics exposition ends with # EOF:\n{text}"
        );
        let mut family: Option<(String, String)> = None;
        let mut samples = BTreeMap::new();
        for line in &lines[..lines.len() - 1] {
            if let Some(c) = meta.captures(line) {
                if &c[1] == "TYPE" {
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "info",
                            "summary",
                            "unknown"
                        ]
                        .contains(&&c[3]),
                        "unknown type: {line}"
                    );
                    family = Some((c[2].to_string(), c[3].to_string()));
                }
                continue;
            }
            let c = sample
                .captures(line)
                .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
            let (name, labels, value) = (&c[1], c.get(2).map_or("", |m| m.as_str()), &c[3]);
            let (base, kind) = family
                .as_ref()
                .unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
            let suffixes: &[&str] = match kind.as_str() {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            assert!(
                suffixes.iter().any(|s| name == format!("{base}{s}")),
                "sample {name} does not belong to the {kind} {base}"
            );
            let mut rest = labels;
            let mut pairs = Vec::new();
            while !rest.is_empty() {
                let l = label
                    .captures(rest)
                    .unwrap_or_else(|| panic!("bad labels in {line:?}"));
                pairs.push(format!("{}=\"{}\"", &l[1], &l[2]));
                rest = &rest[l[0].len()..];
            }
            pairs.sort();
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let key = format!("{name}{{{}}}", pairs.join(","));
            assert!(
                samples.insert(key, value).is_none(),
                "duplicate sample {line}"
            );
        }
        Self {
            samples,
            text: text.to_string(),
        }
    }

    /// The value of a sample, 0 when the series does not exist (yet).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        pairs.sort();
        let key = format!("{name}{{{}}}", pairs.join(","));
        self.samples.get(&key).copied().unwrap_or(0.0)
    }

    /// Asserts the exact value of several samples of one label set.
    fn expect(&self, labels: &[(&str, &str)], expected: &[(&str, f64)]) {
        for (name, value) in expected {
            assert_eq!(
                self.get(name, labels),
                *value,
                "{name}{labels:?} in\n{}",
                self.text
            );
        }
    }

    /// Asserts that `n` syncs of `kind` (import or export labels) started,
    /// were timed, and finished with `status`.
    fn expect_syncs(&self, kind: &[(&str, &str)], status: &str, n: f64) {
        self.expect(
            kind,
            &[
                ("storage_syncs_started_total", n),
                ("storage_sync_duration_seconds_count", n),
            ],
        );
        self.expect(
            &[kind, &[("status", status)]].concat(),
            &[("storage_syncs_finished_total", n)],
        );
    }
}

// ---------------------------------------------------------------- tests

const IMPORT: &[(&str, &str)] = &[("kind", "import"), ("storage_type", "localfiles")];
const EXPORT: &[(&str, &str)] = &[("kind", "export"), ("storage_type", "localfiles")];
const LOCAL: &[(&str, &str)] = &[("storage_type", "localfiles")];

#[tokio::test]
async fn metrics_count_exactly_what_each_sync_did() {
    let _serial = serial().await;
    let server = start_server(Setup::default()).await;
    let project = server.project().await;
    server.write_files(&[
        ("tasks/a.json", r#"[{"image": "a1"}, {"image": "a2"}]"#),
        (
            "tasks/b.jsonl",
            "{\"image\": \"b1\"}\n{\"image\": \"b2\"}\n{\"image\": \"b3\"}\n",
        ),
        ("tasks/bad.json", "{not json"),
    ]);
    let path = server.local_storage(project, "tasks", false).await;

    let first = server.sync_and_wait(&path).await;
    assert_eq!(
        (first["status"].as_str(), first["last_sync_count"].as_i64()),
        (Some("completed_with_errors"), Some(5))
    );
    let m = server.scrape().await;
    m.expect_syncs(IMPORT, "completed_with_errors", 1.0);
    m.expect(
        IMPORT,
        &[
            ("storage_syncs_running", 0.0),
            ("storage_syncs_queued", 0.0),
            ("storage_syncs_in_progress", 0.0),
        ],
    );
    m.expect(
        &[IMPORT, &[("status", "completed")]].concat(),
        &[("storage_syncs_finished_total", 0.0)],
    );
    m.expect(
        &[IMPORT, &[("le", "+Inf")]].concat(),
        &[("storage_sync_duration_seconds_bucket", 1.0)],
    );
    m.expect(
        LOCAL,
        &[
            ("storage_import_objects_listed_total", 3.0),
            ("storage_import_tasks_created_total", 5.0),
            ("storage_import_tasks_existed_total", 0.0),
            ("storage_import_files_failed_total", 1.0),
        ],
    );

    // A second sync: one new file, the five tasks exist, bad.json fails again.
    server.write_files(&[("tasks/c.json", r#"{"image": "c1"}"#)]);
    let second = server.sync_and_wait(&path).await;
    assert_eq!(second["last_sync_count"], 1, "{second}");
    assert_eq!(second["meta"]["tasks_existed"], 5, "{second}");
    let m = server.scrape().await;
    m.expect_syncs(IMPORT, "completed_with_errors", 2.0);
    m.expect(
        LOCAL,
        &[
            ("storage_import_objects_listed_total", 7.0),
            ("storage_import_tasks_created_total", 6.0),
            ("storage_import_tasks_existed_total", 5.0),
            ("storage_import_files_failed_total", 2.0),
        ],
    );

    // Export: creation runs a first export (nothing to write), then a sync
    // writes the two annotations.
    let export_path = server.export_after_annotating(project, 2).await;
    let exported = server.sync_and_wait(&export_path).await;
    assert_eq!(
        (
            exported["status"].as_str(),
            exported["last_sync_count"].as_i64()
        ),
        (Some("completed"), Some(2))
    );
    let m = server.scrape().await;
    m.expect_syncs(EXPORT, "completed", 2.0);
    m.expect(
        LOCAL,
        &[
            ("storage_export_annotations_written_total", 2.0),
            ("storage_export_annotations_failed_total", 0.0),
            ("storage_import_tasks_created_total", 6.0),
        ],
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_access_is_configurable_and_tokens_are_checked() {
    let _serial = serial().await;
    // Default: an API token, as `Token` or `Bearer`.
    let server = start_server(Setup::default()).await;
    let anonymous = server.raw(Method::GET, "/metrics", None, None).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["www-authenticate"], "Token");
    for header in ["Token wrong", "Bearer wrong", "Basic abc", "Token"] {
        let response = server
            .raw(Method::GET, "/metrics", None, Some(header))
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header}");
    }
    for header in [format!("Token {TOKEN}"), format!("Bearer {TOKEN}")] {
        let response = server
            .raw(Method::GET, "/metrics", None, Some(&header))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        Metrics::parse(&response.text().await.unwrap());
    }
    server.stop().await;

    // A scrape-only token, and API tokens still.
    let server = start_server(Setup {
        metrics: MetricsAccess::Token(MetricsToken::new("scrape-token-93f1")),
        ..Setup::default()
    })
    .await;
    for (header, expected) in [
        ("Bearer scrape-token-93f1", StatusCode::OK),
        ("Token scrape-token-93f1", StatusCode::OK),
        (&format!("Token {TOKEN}") as &str, StatusCode::OK),
        ("Bearer scrape-token-93f", StatusCode::UNAUTHORIZED),
        ("Bearer scrape-token-93f1x", StatusCode::UNAUTHORIZED),
    ] {
        assert_eq!(
            server
                .raw(Method::GET, "/metrics", None, Some(header))
                .await
                .status(),
            expected,
            "{header}"
        );
    }
    assert_eq!(
        server
            .raw(Method::GET, "/metrics", None, None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // The scrape token opens nothing else.
    let other = server
        .raw(
            Method::GET,
            "/api/storages/types",
            None,
            Some("Token scrape-token-93f1"),
        )
        .await;
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;

    let server = start_server(Setup {
        metrics: MetricsAccess::Public,
        ..Setup::default()
    })
    .await;
    let response = server.raw(Method::GET, "/metrics", None, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    Metrics::parse(&response.text().await.unwrap());
    server.stop().await;

    let server = start_server(Setup {
        metrics: MetricsAccess::Disabled,
        ..Setup::default()
    })
    .await;
    let response = server
        .raw(
            Method::GET,
            "/metrics",
            None,
            Some(&format!("Token {TOKEN}")),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

/// Whether a JSON log line was logged inside the sync span of `storage`'s
/// job `job`: `span` (the innermost span) and `spans` (all) carry them.
fn in_job(line: &Value, storage: i64, job: &str) -> bool {
    let matches =
        |span: &Value| span["name"] == "sync" && span["storage"] == storage && span["job"] == job;
    line["spans"]
        .as_array()
        .is_some_and(|spans| spans.iter().any(matches))
        && line["span"]["storage"] == storage
        && line["span"]["job"] == job
}

#[tokio::test]
async fn every_line_logged_during_a_sync_carries_its_storage_and_job() {
    let _serial = serial().await;
    // One worker, no polling during the test and a heartbeat every 5 ms: the
    // job's lines are the only ones logged while it runs.
    let server = start_server(Setup {
        runner: RunnerConfig {
            workers: 1,
            poll_interval: Duration::from_secs(3600),
            progress_interval: Duration::from_millis(5),
            import: ImportConfig {
                batch_size: 4,
                ..ImportConfig::default()
            },
            ..RunnerConfig::default()
        },
        gate_on_heartbeat: true,
        ..Setup::default()
    })
    .await;
    let project = server.project().await;
    let files: Vec<(String, String)> = (0..12)
        .map(|i| {
            (
                format!("tasks/{i:02}.json"),
                format!(r#"{{"image": "img-{i}"}}"#),
            )
        })
        .collect();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_str()))
        .collect();
    server.write_files(&files);
    server.write_files(&[("tasks/broken.json", "[{")]);
    let id = support::storage_id(&server.local_storage(project, "tasks", false).await);

    let (during, job) = sync_in_process(&server, id).await;
    // What the window holds: the engine's repository calls, the heartbeat's
    // writes (a separate task), the SQL they ran (sqlx's worker threads)
    // and the final line with the outcome.
    let count = |pred: &dyn Fn(&Value) -> bool| during.iter().filter(|l| pred(l)).count();
    assert!(
        count(&|l| l["target"] == "probe" && l["fields"]["heartbeat"] == true) >= 1,
        "no heartbeat line"
    );
    assert_eq!(
        count(&|l| l["target"] == "probe" && l["fields"]["message"] == "create_tasks"),
        3,
        "12 tasks in batches of 4"
    );
    assert!(
        count(&|l| l["target"].as_str().is_some_and(|t| t.starts_with("sqlx"))) >= 4,
        "no SQL lines"
    );
    let finished = during.last().unwrap();
    assert_eq!(
        finished["fields"]["status"], "completed_with_errors",
        "{finished}"
    );
    assert_eq!(finished["fields"]["count"], 12, "{finished}");
    let (_, stored) = server.get(&format!("/api/storages/localfiles/{id}")).await;
    assert_eq!(stored["last_sync_job"], job.as_str(), "{stored}");
    assert_eq!(stored["status"], "completed_with_errors", "{stored}");

    // An export of two annotations (creation ran a first, empty export).
    let export_path = server.export_after_annotating(project, 2).await;
    let export_id = support::storage_id(&export_path);
    let (during, job) = sync_in_process(&server, export_id).await;
    assert!(
        during.iter().any(|l| l["target"] == "sqlx::query"),
        "no SQL lines"
    );
    assert_eq!(during.last().unwrap()["fields"]["count"], 2);
    let (_, stored) = server.get(&export_path).await;
    assert_eq!(stored["last_sync_job"], job.as_str(), "{stored}");
    server.stop().await;
}

/// Queues a sync of `id` in-process (not over HTTP, so that no request's
/// lines interleave with the job's), waits for its last line and checks
/// that every line from "sync started" to "sync finished" carries the
/// storage and the job. Returns those lines and the job id.
async fn sync_in_process(server: &Server, id: i64) -> (Vec<Value>, String) {
    let logs = Logs::start();
    let queued = server.sync.request_sync(id).await.unwrap();
    let job = queued.sync.last_sync_job.clone().unwrap();
    logs.wait_for("sync finished").await;
    let lines = logs.lines();
    let queued_line = lines
        .iter()
        .find(|l| l["fields"]["message"] == "sync queued")
        .unwrap();
    assert_eq!(
        (
            queued_line["fields"]["storage"].as_i64(),
            queued_line["fields"]["job"].as_str()
        ),
        (Some(id), Some(job.as_str()))
    );
    let position = |message: &str| {
        let found: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l["fields"]["message"] == message)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(found.len(), 1, "one {message:?} line expected: {found:?}");
        found[0]
    };
    let (start, end) = (position("sync started"), position("sync finished"));
    let during = lines[start..=end].to_vec();
    for line in &during {
        assert!(
            in_job(line, id, &job),
            "a line logged during the sync without storage {id} and job {job}: {line}"
        );
    }
    (during, job)
}

// ---------------------------------------------------------------- secrets

/// A secret that cannot appear by chance.
fn secret(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

fn gcs_key(shim: &GcsShim, key_id: &str, private_key: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": key_id,
        "private_key": private_key,
        "client_email": TEST_CLIENT_EMAIL,
        "gcs_base_url": shim.endpoint(),
        "disable_oauth": true,
    })
    .to_string()
}

#[tokio::test]
async fn secrets_and_the_api_token_never_reach_a_response_a_log_line_or_an_error() {
    let _serial = serial().await;
    let moto = storage_testing::moto();
    let seaweed = storage_testing::seaweedfs();
    let fake_gcs = storage_testing::fake_gcs();
    let shim = GcsShim::start(&fake_gcs.endpoint).await;
    let logs = Logs::start();
    let s3 = S3Options::new()
        .with_endpoint_policy(EndpointPolicy::allow_private())
        .with_retry(storage_testing::quick_retry())
        .with_timeout(Duration::from_secs(10));
    let gcs = GcsOptions::new()
        .with_endpoint_policy(EndpointPolicy::allow_private())
        .with_retry(storage_testing::quick_retry())
        .with_timeout(Duration::from_secs(10));
    let server = start_server(Setup {
        backends: vec![Arc::new(S3Backend::new(s3)), Arc::new(GcsBackend::new(gcs))],
        ..Setup::default()
    })
    .await;
    let project = server.project().await;

    // Objects to import, in each emulator.
    let prefix = unique_prefix("observability-secrets");
    let seed = |server: &storage_testing::S3Server| s3_builder(server).build().unwrap();
    let task = || object_store::PutPayload::from(r#"{"image": "x"}"#);
    seed(&moto)
        .put(&format!("{prefix}/in/1.json").into(), task())
        .await
        .unwrap();
    seed(&seaweed)
        .put(&format!("{prefix}/in/1.json").into(), task())
        .await
        .unwrap();
    let gcs_seed: Arc<dyn ObjectStore> = Arc::new(
        object_store::gcp::GoogleCloudStorageBuilder::new()
            .with_service_account_key(
                shim.credentials_json(TEST_CLIENT_EMAIL, TEST_PRIVATE_KEY_PEM),
            )
            .with_bucket_name(&fake_gcs.bucket)
            .with_client_options(ClientOptions::new().with_allow_http(true))
            .build()
            .unwrap(),
    );
    gcs_seed
        .put(&format!("{prefix}/in/1.json").into(), task())
        .await
        .unwrap();

    let mut secrets = vec![TOKEN.to_string(), seaweed.secret_access_key.clone()];
    let mut remember = |value: String| {
        secrets.push(value.clone());
        value
    };
    let s3_body = |s3: &storage_testing::S3Server,
                   key: &str,
                   secret: &str,
                   session: &str,
                   folder: &str| {
        json!({
            "project": project, "title": "s3", "bucket": s3.bucket, "prefix": format!("{prefix}/{folder}"),
            "s3_endpoint": s3.endpoint, "region_name": "us-east-1", "use_blob_urls": false,
            "aws_access_key_id": key, "aws_secret_access_key": secret, "aws_session_token": session,
        })
    };

    // S3 import (moto takes any secret): create, validate (new and stored),
    // sync, list, get, patch with and without a new secret.
    let body = s3_body(
        &moto,
        "AKIDMOTO",
        &remember(secret("s3-import-secret")),
        &remember(secret("s3-import-session")),
        "in",
    );
    let (status, created) = server.post("/api/storages/s3", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    let path = format!("/api/storages/s3/{id}");
    assert_eq!(
        server.post("/api/storages/s3/validate", body).await.0,
        StatusCode::OK
    );
    assert_eq!(
        server
            .post("/api/storages/s3/validate", json!({"id": id}))
            .await
            .0,
        StatusCode::OK
    );
    let synced = server.sync_and_wait(&path).await;
    assert_eq!(
        (
            synced["status"].as_str(),
            synced["last_sync_count"].as_i64()
        ),
        (Some("completed"), Some(1)),
        "{synced}"
    );
    server
        .get(&format!("/api/storages/s3?project={project}"))
        .await;
    server
        .get(&format!("/api/storages?project={project}"))
        .await;
    assert_eq!(
        server.patch(&path, json!({"title": "renamed"})).await.0,
        StatusCode::OK
    );
    let patched = server
        .patch(
            &path,
            json!({"aws_secret_access_key": remember(secret("s3-patched-secret"))}),
        )
        .await;
    assert_eq!(patched.0, StatusCode::OK, "{}", patched.1);
    server.sync_and_wait(&path).await;

    // S3 export: creation runs a first export.
    let body = s3_body(
        &moto,
        "AKIDMOTO",
        &remember(secret("s3-export-secret")),
        &remember(secret("s3-export-session")),
        "out",
    );
    let (status, export) = server.post("/api/storages/export/s3", body).await;
    assert_eq!(status, StatusCode::CREATED, "{export}");
    let export_path = format!("/api/storages/export/s3/{}", export["id"]);
    assert_eq!(
        server.wait_synced(&export_path).await["status"],
        "completed"
    );
    server
        .get(&format!("/api/storages/export?project={project}"))
        .await;

    // A wrong secret where signatures are checked: validation and creation
    // fail with an error text.
    let wrong = s3_body(
        &seaweed,
        &seaweed.access_key_id,
        &remember(secret("s3-wrong-secret")),
        &remember(secret("s3-wrong-session")),
        "in",
    );
    for route in [
        "/api/storages/s3/validate",
        "/api/storages/s3",
        "/api/storages/export/s3/validate",
    ] {
        let (status, error) = server.post(route, wrong.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{route}: {error}");
    }
    // A sync that fails: the stored secret stopped working after creation
    // (rotated at the provider), written behind the API's back.
    let good = s3_body(
        &seaweed,
        &seaweed.access_key_id,
        &seaweed.secret_access_key,
        "",
        "in",
    );
    let (status, created) = server.post("/api/storages/s3", good).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let rotated = created["id"].as_i64().unwrap();
    let mut stored = server.db.storage(rotated).await.unwrap().unwrap();
    stored.settings.set(
        "aws_secret_access_key",
        json!(remember(secret("s3-rotated-secret"))),
    );
    stored.settings.set(
        "aws_session_token",
        json!(remember(secret("s3-rotated-session"))),
    );
    server.db.update_storage(&stored).await.unwrap();
    let failed = server
        .sync_and_wait(&format!("/api/storages/s3/{rotated}"))
        .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["traceback"].as_str().is_some_and(|t| !t.is_empty()),
        "{failed}"
    );
    let (status, _) = server
        .post("/api/storages/s3/validate", json!({"id": rotated}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // GCS import and export with a service-account key; a broken key fails
    // validation.
    let key_id = remember(secret("gcs-key-id"));
    let key = gcs_key(&shim, &key_id, TEST_PRIVATE_KEY_PEM);
    let gcs_body = |key: &str, folder: &str| {
        json!({"project": project, "bucket": fake_gcs.bucket, "prefix": format!("{prefix}/{folder}"),
               "use_blob_urls": false, "google_application_credentials": key})
    };
    let (status, created) = server.post("/api/storages/gcs", gcs_body(&key, "in")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let gcs_path = format!("/api/storages/gcs/{}", created["id"]);
    let synced = server.sync_and_wait(&gcs_path).await;
    assert_eq!(synced["status"], "completed", "{synced}");
    server
        .get(&format!("/api/storages/gcs?project={project}"))
        .await;
    assert_eq!(
        server
            .post("/api/storages/gcs/validate", json!({"id": created["id"]}))
            .await
            .0,
        StatusCode::OK
    );
    let (status, export) = server
        .post("/api/storages/export/gcs", gcs_body(&key, "out"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{export}");
    server
        .wait_synced(&format!("/api/storages/export/gcs/{}", export["id"]))
        .await;
    let broken_pem = remember(secret("gcs-broken-private-key"));
    let broken = gcs_key(
        &shim,
        &remember(secret("gcs-broken-key-id")),
        &format!("-----BEGIN PRIVATE KEY-----\n{broken_pem}\n-----END PRIVATE KEY-----\n"),
    );
    let (status, error) = server
        .post("/api/storages/gcs/validate", gcs_body(&broken, "in"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    server.scrape().await;
    let responses = server.transcript();
    server.stop().await;

    // The key's own lines (base64, 64 characters) stand for the PEM.
    secrets.extend(
        TEST_PRIVATE_KEY_PEM
            .lines()
            .filter(|l| l.len() >= 40)
            .map(str::to_string),
    );
    let transcript = format!("{responses}\n{}", logs.text());
    assert!(
        transcript.len() > 10_000,
        "little was captured: {transcript}"
    );
    for secret in &secrets {
        if let Some(at) = transcript.find(secret.as_str()) {
            let context = &transcript
                [at.saturating_sub(300)..(at + secret.len() + 300).min(transcript.len())];
            panic!("secret {secret:?} leaked:\n...{context}...");
        }
    }
}
