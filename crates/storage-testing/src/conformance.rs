//! The behaviour every bucket backend must show, run by each backend crate's
//! own tests against its real server or emulator, as object_store's
//! `integration.rs` and OpenDAL's behaviour tests are.
//!
//! The suite drives core's engines ([`ImportJob`], [`export_project`]) with
//! [`storage_core::memory::InMemory`] persistence, through the backend's
//! [`Backend`] factory and field schema, as the HTTP API does: settings are
//! built from wire fields, checked, then turned into storages. No HTTP
//! server is involved; `storage-api`'s own conformance suite covers the
//! wire.
//!
//! ```no_run
//! # async fn doc(backend: std::sync::Arc<dyn storage_core::Backend>,
//! #              store: std::sync::Arc<dyn object_store::ObjectStore>) {
//! use storage_testing::conformance::{run_export_suite, run_import_suite, BucketSuite, Seed};
//! let suite = BucketSuite {
//!     name: "s3 on moto".into(),
//!     backend,
//!     bucket: "conformance".into(),
//!     connection: serde_json::json!({"aws_access_key_id": "testing"}),
//!     seed: Seed::new(store, storage_testing::unique_prefix("import")),
//!     rejected_credentials: None,
//!     guards: Vec::new(),
//! };
//! run_import_suite(&suite).await;
//! run_export_suite(&suite).await;
//! # }
//! ```

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{json, Map, Value};
use storage_core::export::{delete_annotation, export_annotation, export_project, ExportConfig};
use storage_core::follow::FollowPolicy;
use storage_core::import::{ImportConfig, ImportJob, ImportOutcome, NoProgress};
use storage_core::memory::InMemory;
use storage_core::persist::ExportedAnnotation;
use storage_core::{Backend, Error, ImportOptions, ImportStorage, Settings, StorageKind};

/// Objects written under one prefix of a bucket, through a store of the test's
/// own (not the backend under test), so what the backend reads and writes is
/// checked by another client.
#[derive(Clone)]
pub struct Seed {
    /// A store on the bucket under test.
    pub store: Arc<dyn ObjectStore>,
    /// A prefix no other test uses (see [`crate::unique_prefix`]).
    pub prefix: String,
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A store's Debug may print its credentials.
        f.debug_struct("Seed")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Seed {
    /// Objects under `prefix` of `store`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl Into<String>) -> Self {
        Self {
            store,
            prefix: prefix.into(),
        }
    }

    /// The full object key of `key` under the prefix.
    pub fn key(&self, key: &str) -> String {
        format!("{}/{key}", self.prefix)
    }

    /// Writes `body` at `key` under the prefix.
    ///
    /// # Panics
    /// If the write fails, naming the key.
    pub async fn put(&self, key: &str, body: &str) {
        self.put_raw(&self.key(key), body).await;
    }

    /// Writes the bytes `body` at `key` under the prefix (binary files:
    /// Parquet).
    ///
    /// # Panics
    /// If the write fails, naming the key.
    pub async fn put_bytes(&self, key: &str, body: Vec<u8>) {
        self.write(&self.key(key), body).await;
    }

    /// Writes `body` at the full object key `key` (outside the prefix too).
    ///
    /// # Panics
    /// If the write fails, naming the key.
    pub async fn put_raw(&self, key: &str, body: &str) {
        self.write(key, body.as_bytes().to_vec()).await;
    }

    async fn write(&self, key: &str, body: Vec<u8>) {
        self.store
            .put(&Path::from(key), body.into())
            .await
            .unwrap_or_else(|e| panic!("seeding {key}: {e}"));
    }

    /// Deletes the object at `key` under the prefix.
    ///
    /// # Panics
    /// If the delete fails, naming the key.
    pub async fn delete(&self, key: &str) {
        let location = Path::from(self.key(key));
        self.store
            .delete(&location)
            .await
            .unwrap_or_else(|e| panic!("deleting {location}: {e}"));
    }

    /// The bytes at `key` under the prefix, `None` when there is no object.
    ///
    /// # Panics
    /// On any other error.
    pub async fn read(&self, key: &str) -> Option<Vec<u8>> {
        let location = Path::from(self.key(key));
        match self.store.get(&location).await {
            Ok(got) => Some(
                got.bytes()
                    .await
                    .unwrap_or_else(|e| panic!("reading {location}: {e}"))
                    .to_vec(),
            ),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("reading {location}: {e}"),
        }
    }
}

/// Connection fields that the server rejects, and what the explanation must
/// say.
#[derive(Debug, Clone)]
pub struct RejectedCredentials {
    /// Fields merged over [`BucketSuite::connection`] (e.g. a wrong secret).
    pub fields: Value,
    /// A fragment the connection check's error must contain.
    pub says: &'static str,
    /// A secret among `fields` that must not appear in the error.
    pub secret: Option<&'static str>,
}

/// A bucket backend on a live server, and how to reach it.
pub struct BucketSuite {
    /// For messages: backend and server (`s3 on moto`).
    pub name: String,
    /// The backend under test, configured for the server.
    pub backend: Arc<dyn Backend>,
    /// The bucket, which exists.
    pub bucket: String,
    /// The wire fields that connect to the server (credentials, endpoint),
    /// `bucket` and `prefix` left out.
    pub connection: Value,
    /// Fixtures under a prefix of the bucket, written by another client.
    pub seed: Seed,
    /// Credentials the server refuses, when it checks them (moto and
    /// fake-gcs accept any).
    pub rejected_credentials: Option<RejectedCredentials>,
    /// Servers (protocol adapters, API doubles) that must live as long as
    /// the suite runs.
    pub guards: Vec<Box<dyn Any + Send + Sync>>,
}

impl fmt::Debug for BucketSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `connection` holds secrets.
        f.debug_struct("BucketSuite")
            .field("name", &self.name)
            .field("bucket", &self.bucket)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

/// A fresh in-memory database with one project and one storage.
struct Db {
    db: InMemory,
    project: i64,
    storage: i64,
}

impl Db {
    fn new(kind: StorageKind, storage_type: &str) -> Self {
        let db = InMemory::new();
        let project = db.add_project(1);
        let storage = db.add_storage(project, kind, storage_type);
        Self {
            db,
            project,
            storage,
        }
    }
}

impl BucketSuite {
    /// Settings as the API builds them from a request body: the defaults
    /// of the backend's fields, the connection, the bucket and `extra`,
    /// then the backend's own checks.
    ///
    /// # Panics
    /// If the fields are refused, with the errors.
    pub fn settings(&self, kind: StorageKind, extra: Value) -> Settings {
        self.try_settings(kind, extra)
            .unwrap_or_else(|e| panic!("{}: settings refused: {e}", self.name))
    }

    fn try_settings(&self, kind: StorageKind, extra: Value) -> storage_core::Result<Settings> {
        let specs = self.backend.fields(kind);
        let mut body = Map::new();
        body.insert(self.backend.bucket_field().into(), json!(self.bucket));
        for part in [&self.connection, &extra] {
            if let Some(fields) = part.as_object() {
                body.extend(fields.clone());
            }
        }
        let mut settings = Settings::defaults(&specs);
        settings
            .apply(&specs, &body)
            .map_err(Error::InvalidConfig)?;
        self.backend.check_settings(kind, &mut settings)?;
        Ok(settings)
    }

    async fn import_storage(&self, extra: Value) -> Arc<dyn ImportStorage> {
        let settings = self.settings(StorageKind::Import, extra);
        self.backend
            .import_storage(&settings)
            .await
            .unwrap_or_else(|e| panic!("{}: building the import storage: {e}", self.name))
    }

    /// Runs one import sync of `extra`'s settings into `db`.
    async fn import(&self, db: &Db, extra: Value) -> ImportOutcome {
        let use_blob_urls = extra["use_blob_urls"].as_bool().unwrap_or(false);
        let follow = FollowPolicy::of(
            &ImportOptions::from_settings(&Settings::from_map(
                extra.as_object().cloned().unwrap_or_default(),
            )),
            extra["confirm_deletions"].as_bool().unwrap_or(false),
        );
        let source = self.import_storage(extra).await;
        ImportJob {
            storage_id: db.storage,
            project: db.project,
            source: source.as_ref(),
            use_blob_urls,
            sink: &db.db,
            config: &ImportConfig {
                batch_size: 10,
                ..ImportConfig::default()
            },
            follow,
        }
        .run(&NoProgress)
        .await
        .unwrap_or_else(|e| panic!("{}: import failed: {e}", self.name))
    }

    fn uri(&self, key: &str) -> String {
        // The backend's own rule: a "bucket" may be several segments
        // (Databricks' `Volumes/<catalog>/<schema>/<volume>`).
        self.backend
            .bucket_uri(&self.settings(StorageKind::Import, json!({})))
            .unwrap_or_else(|| panic!("{}: a bucket backend has a URI scheme", self.name))
            .uri(key)
    }

    fn db(&self, kind: StorageKind) -> Db {
        Db::new(kind, self.backend.name())
    }
}

/// Every import case: Files mode with prefix, recursion and regex, Tasks
/// mode in every format, dedupe on re-sync, presigned URLs, and connection
/// checks that explain a missing prefix, a missing bucket and rejected
/// credentials. Panics on the first difference.
pub async fn run_import_suite(suite: &BucketSuite) {
    files_mode_filters_prefix_regex_and_recursion(suite).await;
    tasks_mode_reads_json_arrays_and_jsonl_and_reports_bad_files(suite).await;
    resync_creates_only_what_is_new(suite).await;
    if suite.backend.capabilities().presign {
        presigned_url_serves_the_object(suite).await;
    } else {
        signed_urls_are_refused(suite).await;
    }
    connection_check_explains_what_is_wrong(suite).await;
}

/// Every export case: one object per annotation, overwrite, delete with
/// `can_delete_objects`, and an empty target accepted.
pub async fn run_export_suite(suite: &BucketSuite) {
    export_writes_overwrites_and_deletes(suite).await;
}

async fn files_mode_filters_prefix_regex_and_recursion(suite: &BucketSuite) {
    let seed = &suite.seed;
    for key in [
        "img/a.jpg",
        "img/b.png",
        "img/sub/c.jpg",
        "img/sub/deeper/d.jpg",
    ] {
        seed.put(key, "img").await;
    }
    // A sibling whose name starts with the prefix is not under it.
    seed.put_raw(&format!("{}x/e.jpg", seed.key("img")), "x")
        .await;
    let root = seed.key("img");

    let db = suite.db(StorageKind::Import);
    let flat = suite
        .import(
            &db,
            json!({"prefix": format!("{root}/"), "regex_filter": ".*\\.jpg", "use_blob_urls": true}),
        )
        .await;
    assert_eq!(flat.progress.created, 1, "{}: {flat:?}", suite.name);
    let task = &db.db.tasks(db.project)[0];
    assert_eq!(
        task.data["$undefined$"],
        json!(suite.uri(&seed.key("img/a.jpg"))),
        "{}",
        suite.name
    );
    let link = &db.db.links(db.storage)[0].link;
    assert_eq!(link.key, seed.key("img/a.jpg"), "{}", suite.name);
    assert_eq!(link.size, Some(3), "{}: the listing's size", suite.name);

    let tree = suite.db(StorageKind::Import);
    let outcome = suite
        .import(
            &tree,
            json!({"prefix": root, "regex_filter": ".*\\.jpg", "use_blob_urls": true, "recursive_scan": true}),
        )
        .await;
    assert_eq!(outcome.progress.created, 3, "{}: {outcome:?}", suite.name);
    let keys: Vec<String> = tree
        .db
        .linked_rows(tree.storage)
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(
        keys,
        vec![
            seed.key("img/a.jpg"),
            seed.key("img/sub/c.jpg"),
            seed.key("img/sub/deeper/d.jpg")
        ],
        "{}",
        suite.name
    );

    // The regex is anchored at the start of the full key.
    let anchored = suite.db(StorageKind::Import);
    let outcome = suite
        .import(
            &anchored,
            json!({"prefix": root, "regex_filter": "sub", "use_blob_urls": true, "recursive_scan": true}),
        )
        .await;
    assert_eq!(
        outcome.progress.created, 0,
        "{}: keys start with the prefix, not 'sub'",
        suite.name
    );
}

async fn tasks_mode_reads_json_arrays_and_jsonl_and_reports_bad_files(suite: &BucketSuite) {
    let seed = &suite.seed;
    seed.put("t/one.json", r#"{"text": "one"}"#).await;
    seed.put(
        "t/list.json",
        r#"[{"text": "l0"}, {"data": {"text": "l1"}, "predictions": [{"result": [], "score": 0.1}]}]"#,
    )
    .await;
    seed.put(
        "t/lines.jsonl",
        "{\"text\": \"j0\"}\n\n{\"text\": \"j1\"}\n",
    )
    .await;
    seed.put("t/broken.json", "{\"text\": ").await;
    let db = suite.db(StorageKind::Import);
    let outcome = suite
        .import(
            &db,
            json!({"prefix": seed.key("t"), "use_blob_urls": false}),
        )
        .await;
    assert_eq!(
        (outcome.progress.created, outcome.progress.failed_files),
        (5, 1),
        "{}: {outcome:?}",
        suite.name
    );
    assert!(
        outcome.file_errors[0].starts_with(&format!("{} line 1", seed.key("t/broken.json"))),
        "{}: {:?}",
        suite.name,
        outcome.file_errors
    );
    let tasks = db.db.tasks(db.project);
    let mut texts: Vec<&str> = tasks
        .iter()
        .map(|t| t.data["text"].as_str().unwrap_or_default())
        .collect();
    texts.sort_unstable();
    assert_eq!(texts, vec!["j0", "j1", "l0", "l1", "one"], "{}", suite.name);
    let predicted = tasks
        .iter()
        .find(|t| t.data["text"] == "l1")
        .map(|t| t.predictions.len());
    assert_eq!(predicted, Some(1), "{}: predictions kept", suite.name);
    let mut rows = db.db.linked_rows(db.storage);
    rows.retain(|(key, _)| key.ends_with(".jsonl"));
    let rows: Vec<Option<i64>> = rows.into_iter().map(|(_, row)| row).collect();
    assert_eq!(
        rows,
        vec![Some(0), Some(2)],
        "{}: JSONL rows by line",
        suite.name
    );
}

async fn resync_creates_only_what_is_new(suite: &BucketSuite) {
    let seed = &suite.seed;
    for i in 0..25 {
        seed.put(&format!("r/{i:02}.txt"), "t").await;
    }
    let db = suite.db(StorageKind::Import);
    let settings = json!({"prefix": seed.key("r"), "use_blob_urls": true});
    let first = suite.import(&db, settings.clone()).await;
    assert_eq!(first.progress.created, 25, "{}", suite.name);
    let again = suite.import(&db, settings.clone()).await;
    assert_eq!(
        (again.progress.created, again.progress.existed),
        (0, 25),
        "{}",
        suite.name
    );
    seed.put("r/new.txt", "t").await;
    let third = suite.import(&db, settings).await;
    assert_eq!(
        (third.progress.created, third.progress.existed),
        (1, 25),
        "{}",
        suite.name
    );
    assert_eq!(db.db.task_count(), 26, "{}", suite.name);
}

async fn presigned_url_serves_the_object(suite: &BucketSuite) {
    let seed = &suite.seed;
    let body = "0123456789abcdef";
    seed.put("media/clip.bin", body).await;
    let source = suite
        .import_storage(json!({"prefix": seed.key("media"), "presign": true, "presign_ttl": 15}))
        .await;
    let location = Path::from(seed.key("media/clip.bin"));
    let url = source
        .signed_url(&location, Duration::from_secs(900))
        .await
        .unwrap_or_else(|e| panic!("{}: signing {location}: {e}", suite.name));
    let fetched = reqwest::get(&url)
        .await
        .unwrap_or_else(|e| panic!("{}: fetching {url}: {e}", suite.name));
    assert_eq!(
        fetched.status(),
        reqwest::StatusCode::OK,
        "{}: {url}",
        suite.name
    );
    let bytes = fetched.bytes().await.unwrap_or_default();
    assert_eq!(&bytes[..], body.as_bytes(), "{}: {url}", suite.name);

    // Stored without a type, served as its extension says: a browser shows
    // the PDF instead of downloading `binary/octet-stream`.
    seed.put("media/scan.pdf", "%PDF-1.4").await;
    let location = Path::from(seed.key("media/scan.pdf"));
    let url = source
        .signed_url(&location, Duration::from_secs(900))
        .await
        .unwrap_or_else(|e| panic!("{}: signing {location}: {e}", suite.name));
    // Azure names the signed override `rsct`; S3 and GCS
    // `response-content-type`.
    let override_param = match suite.backend.capabilities().uri_scheme {
        Some("azure-blob") => "rsct",
        _ => "response-content-type",
    };
    assert!(
        url.contains(&format!("{override_param}=application%2Fpdf")),
        "{}: {url}",
        suite.name
    );
    let fetched = reqwest::get(&url)
        .await
        .unwrap_or_else(|e| panic!("{}: fetching {url}: {e}", suite.name));
    assert_eq!(
        fetched.status(),
        reqwest::StatusCode::OK,
        "{}: {url}",
        suite.name
    );
    assert_eq!(
        fetched
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/pdf"),
        "{}: {url}",
        suite.name
    );
}

/// A backend without signed URLs (Databricks) answers `NotSupported`, so
/// the API proxies its objects instead, whatever `presign` says.
async fn signed_urls_are_refused(suite: &BucketSuite) {
    let seed = &suite.seed;
    seed.put("media/clip.bin", "0123456789abcdef").await;
    let source = suite
        .import_storage(json!({"prefix": seed.key("media"), "presign": true, "presign_ttl": 15}))
        .await;
    let location = Path::from(seed.key("media/clip.bin"));
    let result = source.signed_url(&location, Duration::from_secs(900)).await;
    assert!(
        matches!(result, Err(Error::NotSupported { .. })),
        "{}: {result:?}",
        suite.name
    );
    let got = source
        .store()
        .get_range(&location, 2..6)
        .await
        .unwrap_or_else(|e| panic!("{}: range read of {location}: {e}", suite.name));
    assert_eq!(&got[..], b"2345", "{}", suite.name);
}

/// The explanation of a failed connection check, as the API shows it.
async fn check_error(suite: &BucketSuite, kind: StorageKind, extra: Value) -> String {
    let settings = suite.settings(kind, extra);
    let result = match kind {
        StorageKind::Import => match suite.backend.import_storage(&settings).await {
            Ok(storage) => storage.check_connection().await,
            Err(e) => Err(e),
        },
        StorageKind::Export => match suite.backend.export_storage(&settings).await {
            Ok(storage) => storage.check_connection().await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => panic!("{}: the connection check passed", suite.name),
        Err(e) => e.to_string(),
    }
}

async fn connection_check_explains_what_is_wrong(suite: &BucketSuite) {
    let seed = &suite.seed;
    seed.put("check/a.txt", "a").await;
    let ok = suite
        .import_storage(json!({"prefix": seed.key("check")}))
        .await;
    ok.check_connection()
        .await
        .unwrap_or_else(|e| panic!("{}: a readable prefix fails its check: {e}", suite.name));

    let empty = seed.key("nothing-here");
    let message = check_error(suite, StorageKind::Import, json!({ "prefix": empty })).await;
    assert!(
        message.contains(&empty) && message.contains("found"),
        "{}: {message}",
        suite.name
    );
    let export = suite.settings(StorageKind::Export, json!({ "prefix": empty }));
    let target = suite
        .backend
        .export_storage(&export)
        .await
        .unwrap_or_else(|e| panic!("{}: building the export storage: {e}", suite.name));
    target.check_connection().await.unwrap_or_else(|e| {
        panic!(
            "{}: export storages accept an empty prefix: {e}",
            suite.name
        )
    });

    let missing = "no-such-bucket-for-conformance";
    let mut other_bucket = suite.settings(StorageKind::Import, json!({}));
    other_bucket.set(suite.backend.bucket_field(), json!(missing));
    let result = match suite.backend.import_storage(&other_bucket).await {
        Ok(storage) => storage.check_connection().await,
        Err(e) => Err(e),
    };
    let message = result
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| panic!("{}: a missing bucket passes its check", suite.name));
    assert!(
        message.contains(&format!("Cannot find bucket {missing}")),
        "{}: {message}",
        suite.name
    );

    if let Some(rejected) = &suite.rejected_credentials {
        let message = check_error(
            suite,
            StorageKind::Import,
            merged(&rejected.fields, json!({"prefix": seed.key("check")})),
        )
        .await;
        assert!(
            message.contains(rejected.says),
            "{}: expected {:?} in {message}",
            suite.name,
            rejected.says
        );
        if let Some(secret) = rejected.secret {
            assert!(
                !message.contains(secret),
                "{}: the error shows a secret",
                suite.name
            );
        }
    }
}

fn merged(base: &Value, extra: Value) -> Value {
    let mut out = base.clone();
    if let (Some(out), Some(extra)) = (out.as_object_mut(), extra.as_object()) {
        out.extend(extra.clone());
    }
    out
}

async fn export_writes_overwrites_and_deletes(suite: &BucketSuite) {
    let seed = &suite.seed;
    let import = suite.db(StorageKind::Import);
    seed.put("src/a.txt", "t").await;
    seed.put("src/b.txt", "t").await;
    suite
        .import(
            &import,
            json!({"prefix": seed.key("src"), "use_blob_urls": true}),
        )
        .await;
    let tasks = import.db.tasks(import.project);
    let annotations: Vec<(i64, i64)> = tasks
        .iter()
        .map(|task| {
            let id = import
                .db
                .add_annotation(task.id, json!([{"value": {"choices": ["a"]}}]), Some(1))
                .unwrap_or_else(|e| panic!("{}: {e}", suite.name));
            (id, task.id)
        })
        .collect();

    let settings = suite.settings(
        StorageKind::Export,
        json!({"prefix": seed.key("out/"), "can_delete_objects": true}),
    );
    let target = suite
        .backend
        .export_storage(&settings)
        .await
        .unwrap_or_else(|e| panic!("{}: building the export storage: {e}", suite.name));
    assert!(target.can_delete_objects(), "{}", suite.name);
    let outcome = export_project(
        import.project,
        1,
        target.as_ref(),
        &import.db,
        &ExportConfig::default(),
        &NoProgress,
    )
    .await
    .unwrap_or_else(|e| panic!("{}: export failed: {e}", suite.name));
    assert_eq!(
        (
            outcome.progress.total,
            outcome.progress.written,
            outcome.progress.failed
        ),
        (2, 2, 0),
        "{}: {:?}",
        suite.name,
        outcome.errors
    );

    let read = |id: i64| async move {
        let bytes = seed
            .read(&format!("out/{id}"))
            .await
            .unwrap_or_else(|| panic!("{}: no object for annotation {id}", suite.name));
        assert!(!bytes.contains(&b'\n'), "{}: compact JSON", suite.name);
        serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|e| panic!("{}: annotation {id} is not JSON: {e}", suite.name))
    };
    let (id, task) = annotations[0];
    let written = read(id).await;
    assert_eq!(written["id"], id, "{}", suite.name);
    assert_eq!(written["task"]["id"], task, "{}", suite.name);
    assert_eq!(
        written["result"][0]["value"]["choices"][0], "a",
        "{}",
        suite.name
    );

    // Saving again overwrites the object.
    let changed = ExportedAnnotation {
        id,
        project: import.project,
        payload: json!({"id": id, "result": [], "task": {"id": task}}),
    };
    export_annotation(target.as_ref(), &changed)
        .await
        .unwrap_or_else(|e| panic!("{}: overwriting: {e}", suite.name));
    assert_eq!(read(id).await["result"], json!([]), "{}", suite.name);

    // Deleting removes it; deleting what is gone is not an error.
    for _ in 0..2 {
        delete_annotation(target.as_ref(), id)
            .await
            .unwrap_or_else(|e| panic!("{}: deleting: {e}", suite.name));
    }
    assert!(
        seed.read(&format!("out/{id}")).await.is_none(),
        "{}: can_delete_objects removes the object",
        suite.name
    );
    assert!(
        seed.read(&format!("out/{}", annotations[1].0))
            .await
            .is_some(),
        "{}: the other annotation stays",
        suite.name
    );
}
