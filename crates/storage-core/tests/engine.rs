//! The import and export engines against object_store's InMemory store and
//! an in-memory task sink.

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{json, Value};
use storage_core::export::{export_project, ExportConfig};
use storage_core::filter::{Listing, RegexTarget};
use storage_core::import::{ImportConfig, ImportJob, ImportOutcome, NoProgress, ProgressSink};
use storage_core::persist::{AnnotationSource, ExportedAnnotation, NewTask, TaskSink};
use storage_core::{Error, ExportStorage, ImportStorage, Result};

/// The engine's entry point with positional arguments, to keep the cases short.
async fn import_objects(
    storage_id: i64,
    project: i64,
    source: &dyn ImportStorage,
    use_blob_urls: bool,
    sink: &dyn TaskSink,
    config: &ImportConfig,
    progress: &dyn ProgressSink,
) -> Result<ImportOutcome> {
    ImportJob {
        storage_id,
        project,
        source,
        use_blob_urls,
        sink,
        config,
    }
    .run(progress)
    .await
}

#[derive(Debug)]
struct Source {
    store: Arc<dyn ObjectStore>,
    listing: Listing,
}

#[async_trait]
impl ImportStorage for Source {
    fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }
    fn listing(&self) -> &Listing {
        &self.listing
    }
    fn object_key(&self, location: &Path) -> String {
        location.to_string()
    }
    fn task_url(&self, location: &Path) -> String {
        format!("mem://bucket/{location}")
    }
}

/// Keeps tasks in memory; can be told to fail its n-th `create_tasks` call
/// (1-based) to simulate a crash between batches.
#[derive(Debug, Default)]
struct Sink {
    tasks: Mutex<Vec<NewTask>>,
    unfinished: Mutex<HashSet<String>>,
    calls: AtomicUsize,
    fail_on_call: Option<usize>,
}

#[async_trait]
impl TaskSink for Sink {
    async fn linked_keys(&self, _: i64, keys: &[String]) -> Result<HashMap<String, u64>> {
        let tasks = self.tasks.lock().unwrap();
        let unfinished = self.unfinished.lock().unwrap();
        let mut found = HashMap::new();
        for task in tasks
            .iter()
            .filter(|t| keys.contains(&t.link.key) && !unfinished.contains(&t.link.key))
        {
            *found.entry(task.link.key.clone()).or_default() += 1;
        }
        Ok(found)
    }

    async fn begin_object(&self, _: i64, key: &str) -> Result<()> {
        self.unfinished.lock().unwrap().insert(key.to_string());
        Ok(())
    }

    async fn finish_object(&self, _: i64, key: &str) -> Result<()> {
        self.unfinished.lock().unwrap().remove(key);
        Ok(())
    }

    async fn create_tasks(&self, _: i64, _: i64, tasks: &[NewTask]) -> Result<u64> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_on_call == Some(call) {
            return Err(Error::backend("inserting tasks", "simulated crash"));
        }
        let mut stored = self.tasks.lock().unwrap();
        let fresh: Vec<NewTask> = tasks
            .iter()
            .filter(|t| {
                !stored
                    .iter()
                    .any(|s| s.link.key == t.link.key && s.link.row_index == t.link.row_index)
            })
            .cloned()
            .collect();
        stored.extend_from_slice(&fresh);
        Ok(fresh.len() as u64)
    }
}

impl Sink {
    fn keys(&self) -> Vec<(String, Option<i64>)> {
        let mut keys: Vec<_> = self
            .tasks
            .lock()
            .unwrap()
            .iter()
            .map(|t| (t.link.key.clone(), t.link.row_index))
            .collect();
        keys.sort();
        keys
    }
}

async fn store_with(objects: &[(&str, &str)]) -> Arc<dyn ObjectStore> {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    for (key, body) in objects {
        store
            .put(&Path::from(*key), body.to_string().into())
            .await
            .unwrap();
    }
    store
}

fn source(
    store: &Arc<dyn ObjectStore>,
    prefix: Option<&str>,
    recursive: bool,
    regex: Option<&str>,
) -> Source {
    Source {
        store: store.clone(),
        listing: Listing::new(prefix, recursive, regex, RegexTarget::FullKey).unwrap(),
    }
}

fn small_batches() -> ImportConfig {
    ImportConfig {
        batch_size: 2,
        ..ImportConfig::default()
    }
}

#[tokio::test]
async fn files_mode_applies_prefix_recursion_and_regex() {
    let store = store_with(&[
        ("img/a.jpg", "x"),
        ("img/b.png", "x"),
        ("img/c.jpg", "x"),
        ("img/sub/d.jpg", "x"),
        ("other/e.jpg", "x"),
    ])
    .await;
    let sink = Sink::default();
    let flat = source(&store, Some("img/"), false, Some(r".*\.jpg"));
    let outcome = import_objects(1, 1, &flat, true, &sink, &small_batches(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(outcome.progress.created, 2);
    assert_eq!(
        sink.keys(),
        vec![
            ("img/a.jpg".to_string(), None),
            ("img/c.jpg".to_string(), None)
        ]
    );
    let first = sink.tasks.lock().unwrap()[0].clone();
    assert_eq!(
        Value::Object(first.data),
        json!({"$undefined$": "mem://bucket/img/a.jpg"})
    );
    assert_eq!(first.link.size, Some(1));
    assert!(first.link.etag.is_some() && first.link.last_modified.is_some());

    let tree = source(&store, Some("img"), true, Some(r".*\.jpg"));
    let outcome = import_objects(1, 1, &tree, true, &sink, &small_batches(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(outcome.progress.created, 1, "only img/sub/d.jpg is new");
    assert_eq!(outcome.progress.existed, 2);
}

#[tokio::test]
async fn resync_creates_nothing_and_counts_existing_tasks() {
    let store = store_with(&[
        ("t/a.json", r#"[{"x":1},{"x":2}]"#),
        ("t/b.json", r#"{"x":3}"#),
    ])
    .await;
    let sink = Sink::default();
    let src = source(&store, Some("t"), false, None);
    let first = import_objects(1, 1, &src, false, &sink, &small_batches(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(first.progress.created, 3);
    let again = import_objects(1, 1, &src, false, &sink, &small_batches(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(again.progress.created, 0);
    assert_eq!(
        again.progress.existed, 3,
        "tasks linked to the keys seen, not keys"
    );
    assert_eq!(sink.tasks.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn tasks_mode_reads_every_format() {
    let store = store_with(&[
        ("a.json", r#"{"text": "single"}"#),
        ("b.json", r#"[{"text": "l0"}, {"data": {"text": "l1"}}]"#),
        (
            "c.json",
            r#"{"data": {"text": "p"}, "predictions": [{"result": [], "score": 0.5}]}"#,
        ),
        ("d.jsonl", "{\"text\": \"j0\"}\n\n{\"text\": \"j2\"}\n"),
        ("e", r#"{"text": "no extension"}"#),
    ])
    .await;
    let sink = Sink::default();
    let outcome = import_objects(
        1,
        1,
        &source(&store, None, false, None),
        false,
        &sink,
        &small_batches(),
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(outcome.progress.created, 7);
    assert!(outcome.file_errors.is_empty());
    assert_eq!(
        sink.keys(),
        vec![
            ("a.json".into(), None),
            ("b.json".into(), Some(0)),
            ("b.json".into(), Some(1)),
            ("c.json".into(), None),
            ("d.jsonl".into(), Some(0)),
            ("d.jsonl".into(), Some(2)),
            ("e".into(), None),
        ]
    );
    let tasks = sink.tasks.lock().unwrap();
    let with_prediction = tasks.iter().find(|t| t.link.key == "c.json").unwrap();
    assert_eq!(with_prediction.predictions.len(), 1);
    assert_eq!(with_prediction.data["text"], "p");
}

#[tokio::test]
async fn bad_json_in_one_file_is_reported_and_the_rest_imported() {
    let store = store_with(&[
        ("a.json", r#"{"text": "ok"}"#),
        ("b.json", r#"{"text": "#),
        ("c.jsonl", "{\"text\": 1}\n{oops}\n"),
        ("d.json", r#"{"text": "ok too"}"#),
    ])
    .await;
    let sink = Sink::default();
    let outcome = import_objects(
        1,
        1,
        &source(&store, None, false, None),
        false,
        &sink,
        &small_batches(),
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(outcome.progress.created, 2);
    assert_eq!(outcome.progress.failed_files, 2);
    assert!(
        outcome.file_errors[0].starts_with("b.json line 1: invalid JSON"),
        "{:?}",
        outcome.file_errors
    );
    assert!(
        outcome.file_errors[1].starts_with("c.jsonl line 2: invalid JSON"),
        "{:?}",
        outcome.file_errors
    );
}

#[tokio::test]
async fn tasks_mode_on_media_fails_with_label_studio_hint() {
    let store = store_with(&[("img.jpg", "binary")]).await;
    let err = import_objects(
        1,
        1,
        &source(&store, None, false, None),
        false,
        &Sink::default(),
        &small_batches(),
        &NoProgress,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("is not a JSON/JSONL/Parquet file"),
        "{err}"
    );
}

#[tokio::test]
async fn a_crash_between_batches_loses_and_duplicates_nothing() {
    let objects: Vec<(String, String)> = (0..9)
        .map(|i| (format!("f/{i:02}.jpg"), "x".to_string()))
        .collect();
    let refs: Vec<(&str, &str)> = objects
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let store = store_with(&refs).await;
    let src = source(&store, Some("f"), false, None);
    let crashing = Sink {
        fail_on_call: Some(3),
        ..Sink::default()
    };
    let err = import_objects(1, 1, &src, true, &crashing, &small_batches(), &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("simulated crash"));
    assert_eq!(
        crashing.tasks.lock().unwrap().len(),
        4,
        "two whole batches, nothing of the third"
    );

    // The next sync (same data, healthy database) completes exactly.
    let healed = Sink {
        tasks: Mutex::new(crashing.tasks.lock().unwrap().clone()),
        ..Sink::default()
    };
    let outcome = import_objects(1, 1, &src, true, &healed, &small_batches(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(outcome.progress.created, 5);
    assert_eq!(outcome.progress.existed, 4);
    let keys = healed.keys();
    assert_eq!(keys.len(), 9);
    let mut unique = keys.clone();
    unique.dedup();
    assert_eq!(unique, keys, "no duplicates");
}

/// Every file above 64 bytes is streamed, two tasks per batch.
fn streaming() -> ImportConfig {
    ImportConfig {
        batch_size: 2,
        stream_threshold_bytes: 64,
        ..ImportConfig::default()
    }
}

fn jsonl(lines: usize) -> String {
    (0..lines)
        .map(|i| format!("{{\"text\": \"t{i}\"}}\n"))
        .collect()
}

#[tokio::test]
async fn large_task_files_are_streamed_in_batches_with_exact_rows() {
    let big_array = format!(
        "[{}]",
        (0..12)
            .map(|i| format!("{{\"n\": {i}}}"))
            .collect::<Vec<_>>()
            .join(",\n ")
    );
    let store = store_with(&[
        ("big.jsonl", &jsonl(7)),
        ("big.json", &big_array),
        ("small.json", r#"{"n": 1}"#),
    ])
    .await;
    let sink = Sink::default();
    let outcome = import_objects(
        1,
        1,
        &source(&store, None, false, None),
        false,
        &sink,
        &streaming(),
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(outcome.progress.created, 20);
    assert!(outcome.file_errors.is_empty(), "{:?}", outcome.file_errors);
    let keys = sink.keys();
    let rows = |key: &str| {
        keys.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, r)| r.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(rows("big.jsonl"), (0..7).collect::<Vec<_>>());
    assert_eq!(rows("big.json"), (0..12).collect::<Vec<_>>());
    assert!(
        sink.unfinished.lock().unwrap().is_empty(),
        "finished files are marked finished"
    );
    assert!(
        sink.calls.load(Ordering::SeqCst) >= 10,
        "written in batches, not one transaction per file"
    );

    let again = import_objects(
        1,
        1,
        &source(&store, None, false, None),
        false,
        &sink,
        &streaming(),
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!((again.progress.created, again.progress.existed), (0, 20));
}

#[tokio::test]
async fn a_crash_inside_a_streamed_file_is_resumed_without_loss_or_duplicates() {
    let store = store_with(&[("big.jsonl", &jsonl(9))]).await;
    let src = source(&store, None, false, None);
    let crashing = Sink {
        fail_on_call: Some(3),
        ..Sink::default()
    };
    let err = import_objects(1, 1, &src, false, &crashing, &streaming(), &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("simulated crash"), "{err}");
    assert_eq!(
        crashing.tasks.lock().unwrap().len(),
        4,
        "two whole batches of the file"
    );
    assert!(crashing.unfinished.lock().unwrap().contains("big.jsonl"));

    let healed = Sink {
        tasks: Mutex::new(crashing.tasks.lock().unwrap().clone()),
        unfinished: Mutex::new(crashing.unfinished.lock().unwrap().clone()),
        ..Sink::default()
    };
    let outcome = import_objects(1, 1, &src, false, &healed, &streaming(), &NoProgress)
        .await
        .unwrap();
    assert_eq!((outcome.progress.created, outcome.progress.existed), (5, 4));
    let rows: Vec<_> = healed
        .keys()
        .into_iter()
        .map(|(_, row)| row.unwrap())
        .collect();
    assert_eq!(rows, (0..9).collect::<Vec<_>>(), "every line once");
    assert!(healed.unfinished.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_bad_line_in_a_streamed_file_is_a_file_error_naming_key_and_line() {
    let body = format!("{}{{\"text\": oops}}\n{}", jsonl(3), jsonl(2));
    let store = store_with(&[("big.jsonl", &body), ("z.json", r#"{"n": 1}"#)]).await;
    let sink = Sink::default();
    let outcome = import_objects(
        1,
        1,
        &source(&store, None, false, None),
        false,
        &sink,
        &streaming(),
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(outcome.progress.failed_files, 1);
    assert!(
        outcome.file_errors[0].starts_with("big.jsonl line 4: invalid JSON"),
        "{:?}",
        outcome.file_errors
    );
    assert!(
        sink.keys().contains(&("z.json".into(), None)),
        "the other file is imported"
    );
    assert!(
        sink.unfinished.lock().unwrap().contains("big.jsonl"),
        "read again by the next sync"
    );
}

#[derive(Debug)]
struct Target {
    store: Arc<dyn ObjectStore>,
    prefix: &'static str,
}

#[async_trait]
impl ExportStorage for Target {
    fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }
    fn location(&self, key: &str) -> Path {
        Path::from(format!("{}/{key}", self.prefix))
    }
    fn can_delete_objects(&self) -> bool {
        true
    }
    async fn check_connection(&self) -> Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
struct Annotations(Vec<ExportedAnnotation>);

#[async_trait]
impl AnnotationSource for Annotations {
    async fn annotations_for_export(
        &self,
        _: i64,
        after: i64,
        limit: usize,
    ) -> Result<Vec<ExportedAnnotation>> {
        Ok(self
            .0
            .iter()
            .filter(|a| a.id > after)
            .take(limit)
            .cloned()
            .collect())
    }
    async fn count_annotations(&self, _: i64) -> Result<u64> {
        Ok(self.0.len() as u64)
    }
    async fn annotation_for_export(&self, id: i64) -> Result<Option<ExportedAnnotation>> {
        Ok(self.0.iter().find(|a| a.id == id).cloned())
    }
}

fn annotations(n: i64) -> Annotations {
    Annotations(
        (1..=n)
            .map(|id| ExportedAnnotation {
                id,
                project: 1,
                payload: json!({"id": id, "result": [], "task": {"id": 100 + id}}),
            })
            .collect(),
    )
}

#[tokio::test]
async fn export_writes_one_object_per_annotation_named_by_id() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let target = Target {
        store: store.clone(),
        prefix: "export",
    };
    let config = ExportConfig {
        page_size: 3,
        ..ExportConfig::default()
    };
    let outcome = export_project(1, &target, &annotations(7), &config, &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        (
            outcome.progress.total,
            outcome.progress.written,
            outcome.progress.failed
        ),
        (7, 7, 0)
    );
    let body = store
        .get(&Path::from("export/5"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["task"]["id"], 105);
    assert!(!body.contains(&b'\n'), "bucket objects are compact JSON");

    storage_core::export::delete_annotation(&target, 5)
        .await
        .unwrap();
    storage_core::export::delete_annotation(&target, 5)
        .await
        .unwrap();
    assert!(store.head(&Path::from("export/5")).await.is_err());
}

/// A store whose writes always fail.
#[derive(Debug)]
struct ReadOnly(InMemory);

impl std::fmt::Display for ReadOnly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadOnly")
    }
}

#[async_trait]
impl ObjectStore for ReadOnly {
    async fn put_opts(
        &self,
        location: &Path,
        _: object_store::PutPayload,
        _: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        Err(object_store::Error::PermissionDenied {
            path: location.to_string(),
            source: "read-only bucket".into(),
        })
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.0.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
        self.0.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.0.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.0.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

#[tokio::test]
async fn export_write_failures_are_counted_not_hidden() {
    let target = Target {
        store: Arc::new(ReadOnly(InMemory::new())),
        prefix: "x",
    };
    let outcome = export_project(
        1,
        &target,
        &annotations(3),
        &ExportConfig::default(),
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!((outcome.progress.written, outcome.progress.failed), (0, 3));
    assert!(
        outcome.errors[0].contains("read-only bucket"),
        "{:?}",
        outcome.errors
    );
}

/// Stops the run at its first report, as a shutdown or a lost lease does.
struct StopAtOnce;

impl ProgressSink for StopAtOnce {
    fn report(&self, _: &storage_core::import::Progress) -> Result<()> {
        Err(Error::NotSupported {
            what: "stopped".into(),
        })
    }
}

#[tokio::test]
async fn a_run_stopped_early_ends_promptly_while_the_listing_still_has_batches() {
    let objects: Vec<(String, String)> = (0..200)
        .map(|i| (format!("s/{i:03}.jpg"), "x".to_string()))
        .collect();
    let refs: Vec<(&str, &str)> = objects
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let store = store_with(&refs).await;
    let src = source(&store, Some("s"), true, None);
    let sink = Sink::default();
    let config = small_batches();
    let run = import_objects(1, 1, &src, true, &sink, &config, &StopAtOnce);
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), run)
        .await
        .expect("the listing producer must not wait forever for a stopped consumer");
    assert!(result.unwrap_err().to_string().contains("stopped"));
    assert_eq!(
        sink.tasks.lock().unwrap().len(),
        2,
        "one whole batch, then the stop"
    );
}
