//! The import and export engines against object_store's InMemory store and
//! storage_core's in-memory persistence.

#![allow(clippy::unwrap_used)] // test helpers stop on the first failure

use std::sync::Arc;

use async_trait::async_trait;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{json, Value};
use storage_core::export::{export_project, ExportConfig};
use storage_core::fields::{ObjectChanged, ObjectDeleted};
use storage_core::filter::{Listing, RegexTarget};
use storage_core::follow::FollowPolicy;
use storage_core::import::{ImportConfig, ImportOutcome, NoProgress, ProgressSink};
use storage_core::memory::{self};
use storage_core::persist::{NewTask, TaskSink};
use storage_core::{Error, ExportStorage, ImportStorage, Result};

/// The shared import fixture (an in-memory database with one import
/// storage) with this file's shortcuts.
struct Fixture(memory::ImportFixture);

impl std::ops::Deref for Fixture {
    type Target = memory::ImportFixture;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Fixture {
    fn new() -> Self {
        Self(memory::ImportFixture::new("mem"))
    }

    /// A Tasks-mode import of the whole store.
    async fn import_tasks(
        &self,
        store: &Arc<dyn ObjectStore>,
        config: &ImportConfig,
    ) -> Result<ImportOutcome> {
        self.import(
            &source(store, None, false, None),
            false,
            config,
            &NoProgress,
        )
        .await
    }

    /// The `(key, row_index)` pairs linked, sorted.
    fn keys(&self) -> Vec<(String, Option<i64>)> {
        self.db.linked_rows(self.storage)
    }
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

/// A store with `count` one-byte images `<dir>/000.jpg`, `<dir>/001.jpg`, ...
async fn numbered_images(dir: &str, count: usize) -> Arc<dyn ObjectStore> {
    let keys: Vec<String> = (0..count).map(|i| format!("{dir}/{i:03}.jpg")).collect();
    let objects: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "x")).collect();
    store_with(&objects).await
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
    let sink = Fixture::new();
    let flat = source(&store, Some("img/"), false, Some(r".*\.jpg"));
    let outcome = sink
        .import(&flat, true, &small_batches(), &NoProgress)
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
    let (first, link) = sink.task_of("img/a.jpg").unwrap();
    assert_eq!(
        first.id,
        sink.db.tasks(sink.project)[0].id,
        "the first task"
    );
    assert_eq!(
        Value::Object(first.data),
        json!({"$undefined$": "mem://bucket/img/a.jpg"})
    );
    assert_eq!(link.size, Some(1));
    assert!(link.etag.is_some() && link.last_modified.is_some());

    let tree = source(&store, Some("img"), true, Some(r".*\.jpg"));
    let outcome = sink
        .import(&tree, true, &small_batches(), &NoProgress)
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
    let sink = Fixture::new();
    let src = source(&store, Some("t"), false, None);
    let first = sink
        .import(&src, false, &small_batches(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(first.progress.created, 3);
    let again = sink
        .import(&src, false, &small_batches(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(again.progress.created, 0);
    assert_eq!(
        again.progress.existed, 3,
        "tasks linked to the keys seen, not keys"
    );
    assert_eq!(sink.db.task_count(), 3);
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
    let sink = Fixture::new();
    let outcome = sink.import_tasks(&store, &small_batches()).await.unwrap();
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
    let (with_prediction, _) = sink.task_of("c.json").unwrap();
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
    let sink = Fixture::new();
    let outcome = sink.import_tasks(&store, &small_batches()).await.unwrap();
    assert_eq!(
        outcome.progress.created, 3,
        "a.json, d.json and the valid first line of c.jsonl"
    );
    assert!(sink.keys().contains(&("c.jsonl".into(), Some(0))));
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
    let err = Fixture::new()
        .import_tasks(&store, &small_batches())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("is not a JSON/JSONL/Parquet file"),
        "{err}"
    );
}

#[tokio::test]
async fn a_crash_between_batches_loses_and_duplicates_nothing() {
    let store = numbered_images("f", 9).await;
    let src = source(&store, Some("f"), false, None);
    let crashing = Fixture::new();
    crashing.db.fail_create_tasks_call(Some(3));
    let err = crashing
        .import(&src, true, &small_batches(), &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("simulated crash"));
    assert_eq!(
        crashing.db.task_count(),
        4,
        "two whole batches, nothing of the third"
    );

    // The next sync (same data, healthy database) completes exactly.
    let healed = crashing;
    healed.db.fail_create_tasks_call(None);
    let outcome = healed
        .import(&src, true, &small_batches(), &NoProgress)
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

#[tokio::test]
async fn a_storage_without_links_is_synced_without_lookups_and_still_never_duplicates() {
    for use_blob_urls in [true, false] {
        let store = if use_blob_urls {
            numbered_images("f", 9).await
        } else {
            let tasks: Vec<String> = (0..9).map(|i| format!(r#"{{"x":{i}}}"#)).collect();
            let keys: Vec<String> = (0..9).map(|i| format!("f/{i}.json")).collect();
            let objects: Vec<(&str, &str)> = keys
                .iter()
                .zip(&tasks)
                .map(|(key, task)| (key.as_str(), task.as_str()))
                .collect();
            store_with(&objects).await
        };
        let src = source(&store, Some("f"), false, None);
        let sink = Fixture::new();
        sink.db.fail_create_tasks_call(Some(3));
        let config = small_batches();
        let first = sink.import(&src, use_blob_urls, &config, &NoProgress).await;
        assert!(first.unwrap_err().to_string().contains("simulated crash"));
        assert_eq!(sink.db.lookup_calls(), 0, "no links when the sync began");
        assert_eq!(sink.db.task_count(), 4);

        // Resumed with links in place: each batch of 2 is looked up.
        sink.db.fail_create_tasks_call(None);
        let outcome = sink
            .import(&src, use_blob_urls, &config, &NoProgress)
            .await
            .unwrap();
        assert_eq!(sink.db.lookup_calls(), 5);
        assert_eq!((outcome.progress.created, outcome.progress.existed), (5, 4));
        assert_eq!(sink.keys().len(), 9);
        assert_eq!(sink.db.task_count(), 9, "no duplicates");
    }
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
    let sink = Fixture::new();
    let outcome = sink.import_tasks(&store, &streaming()).await.unwrap();
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
        sink.db.unfinished(sink.storage).is_empty(),
        "finished files are marked finished"
    );
    assert!(
        sink.db.create_tasks_calls() >= 10,
        "written in batches, not one transaction per file"
    );

    let again = sink.import_tasks(&store, &streaming()).await.unwrap();
    assert_eq!((again.progress.created, again.progress.existed), (0, 20));
}

#[tokio::test]
async fn a_crash_inside_a_streamed_file_is_resumed_without_loss_or_duplicates() {
    let store = store_with(&[("big.jsonl", &jsonl(9))]).await;
    let src = source(&store, None, false, None);
    let crashing = Fixture::new();
    crashing.db.fail_create_tasks_call(Some(3));
    let err = crashing
        .import(&src, false, &streaming(), &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("simulated crash"), "{err}");
    assert_eq!(crashing.db.task_count(), 4, "two whole batches of the file");
    assert_eq!(crashing.db.unfinished(crashing.storage), vec!["big.jsonl"]);

    let healed = crashing;
    healed.db.fail_create_tasks_call(None);
    let outcome = healed
        .import(&src, false, &streaming(), &NoProgress)
        .await
        .unwrap();
    assert_eq!((outcome.progress.created, outcome.progress.existed), (5, 4));
    let rows: Vec<_> = healed
        .keys()
        .into_iter()
        .map(|(_, row)| row.unwrap())
        .collect();
    assert_eq!(rows, (0..9).collect::<Vec<_>>(), "every line once");
    assert!(healed.db.unfinished(healed.storage).is_empty());
}

#[tokio::test]
async fn a_bad_line_in_a_streamed_file_is_reported_and_the_rest_of_the_file_imported() {
    let body = format!("{}{{\"text\": oops}}\n{}", jsonl(3), jsonl(2));
    let store = store_with(&[("big.jsonl", &body), ("z.json", r#"{"n": 1}"#)]).await;
    let sink = Fixture::new();
    let outcome = sink.import_tasks(&store, &streaming()).await.unwrap();
    assert_eq!(outcome.progress.failed_files, 1);
    assert_eq!(
        outcome.file_errors,
        vec!["big.jsonl line 4: invalid JSON: expected value".to_string()]
    );
    assert_eq!(
        outcome.progress.created, 6,
        "five lines of big.jsonl and z.json"
    );
    let rows: Vec<_> = sink
        .keys()
        .into_iter()
        .filter(|(key, _)| key == "big.jsonl")
        .map(|(_, row)| row.unwrap())
        .collect();
    assert_eq!(
        rows,
        vec![0, 1, 2, 4, 5],
        "every valid line, the bad one skipped"
    );
    assert!(
        sink.db.unfinished(sink.storage).is_empty(),
        "read to its end: finished, as a small file is"
    );
}

/// Issue 12, finding 10: the same bad lines give the same outcome whether
/// the file is read whole (small) or streamed (large): every valid task
/// imported, every bad line reported with its line, in any batch.
#[tokio::test]
async fn bad_lines_give_the_same_outcome_at_any_file_size() {
    let mut lines: Vec<String> = (0..9).map(|i| format!("{{\"text\": \"t{i}\"}}")).collect();
    lines[0] = "{\"text\": broken".into();
    lines[4] = "[\"not an object\"]".into();
    lines[8] = "{\"text\": \"x\"} {\"text\": \"two on a line\"}".into();
    let body = lines.join("\n") + "\n";
    let array = "[{\"n\": 0}, 7, {\"n\": 2}, {\"n\": }, {\"n\": 4}]";
    let expected_errors = vec![
        "a.jsonl line 1: invalid JSON: the task is not closed before the next line's task"
            .to_string(),
        "a.jsonl line 5: a task must be a JSON object, found an array".into(),
        "a.jsonl line 9: invalid JSON: one task per line expected".into(),
        "b.json line 1: item 1: a task must be a JSON object, found a number".into(),
        "b.json line 1: item 3: invalid JSON: expected value".into(),
    ];
    let mut outcomes = Vec::new();
    for threshold in [u64::MAX, 8] {
        let store = store_with(&[("a.jsonl", &body), ("b.json", array)]).await;
        let config = ImportConfig {
            batch_size: 2,
            stream_threshold_bytes: threshold,
            ..ImportConfig::default()
        };
        let sink = Fixture::new();
        let outcome = sink.import_tasks(&store, &config).await.unwrap();
        assert_eq!(
            outcome.file_errors, expected_errors,
            "threshold {threshold}"
        );
        assert_eq!(
            (
                outcome.progress.created,
                outcome.progress.failed_files,
                outcome.bad_tasks
            ),
            (10, 2, 5),
            "threshold {threshold}"
        );
        assert_eq!(
            sink.keys(),
            [1, 2, 3, 5, 6, 7, 8]
                .iter()
                .map(|row| ("a.jsonl".to_string(), Some(*row)))
                .chain(
                    [0, 2, 4]
                        .iter()
                        .map(|row| ("b.json".to_string(), Some(*row)))
                )
                .collect::<Vec<_>>(),
            "threshold {threshold}"
        );
        assert!(sink.db.unfinished(sink.storage).is_empty());
        // The next sync reads neither file again.
        let again = sink.import_tasks(&store, &config).await.unwrap();
        assert_eq!((again.progress.created, again.progress.existed), (0, 10));
        assert!(again.file_errors.is_empty());
        outcomes.push(outcome.file_errors);
    }
    assert_eq!(outcomes[0], outcomes[1]);
}

/// A file of many bad lines reports the first ones and counts the rest.
#[tokio::test]
async fn many_bad_lines_are_reported_up_to_a_bound_then_counted() {
    let body = "bad\n{\"ok\": 1}\n".repeat(150);
    let store = store_with(&[("many.jsonl", &body)]).await;
    let sink = Fixture::new();
    let outcome = sink.import_tasks(&store, &streaming()).await.unwrap();
    assert_eq!(outcome.progress.created, 150);
    assert_eq!(
        outcome.bad_tasks, 150,
        "every bad task counts, shown or not"
    );
    assert_eq!(outcome.file_errors.len(), 101);
    assert_eq!(
        outcome.file_errors[99],
        "many.jsonl line 199: a task must be a JSON object, found text that is not JSON"
    );
    assert_eq!(
        outcome.file_errors[100],
        "many.jsonl: 50 more bad tasks not shown (the first 100 are)"
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

/// A project with `n` tasks, one annotation each; the annotation ids with
/// their task ids.
async fn annotated(n: usize) -> (Fixture, Vec<(i64, i64)>) {
    let fixture = Fixture::new();
    let tasks: Vec<NewTask> = (0..n)
        .map(|i| memory::new_task(&format!("k{i}"), None, json!({ "n": i })))
        .collect();
    fixture
        .db
        .create_tasks(fixture.project, fixture.storage, tasks.to_vec())
        .await
        .unwrap();
    let ids = fixture
        .db
        .tasks(fixture.project)
        .iter()
        .map(|task| {
            let id = fixture.db.add_annotation(task.id, json!([]), None).unwrap();
            (id, task.id)
        })
        .collect();
    (fixture, ids)
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
    let (db, ids) = annotated(7).await;
    let outcome = export_project(db.project, 1, &target, &db.db, &config, &NoProgress)
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
    let (fifth, fifth_task) = ids[4];
    let body = store
        .get(&Path::from(format!("export/{fifth}")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["task"]["id"], fifth_task);
    assert!(!body.contains(&b'\n'), "bucket objects are compact JSON");

    storage_core::export::delete_annotation(&target, fifth)
        .await
        .unwrap();
    storage_core::export::delete_annotation(&target, fifth)
        .await
        .unwrap();
    assert!(store
        .head(&Path::from(format!("export/{fifth}")))
        .await
        .is_err());
}

#[tokio::test]
async fn export_write_failures_are_counted_not_hidden() {
    let target = Target {
        store: Arc::new(memory::FaultyStore::new().read_only()),
        prefix: "x",
    };
    let (db, _) = annotated(3).await;
    let outcome = export_project(
        db.project,
        1,
        &target,
        &db.db,
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
    let store = numbered_images("s", 200).await;
    let src = source(&store, Some("s"), true, None);
    let sink = Fixture::new();
    let config = small_batches();
    let run = sink.import(&src, true, &config, &StopAtOnce);
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), run)
        .await
        .expect("the listing producer must not wait forever for a stopped consumer");
    assert!(result.unwrap_err().to_string().contains("stopped"));
    assert_eq!(sink.db.task_count(), 2, "one whole batch, then the stop");
}

/// A Parquet task file of `tests/fixtures/parquet/` (made by pyarrow with
/// `make_fixtures.py` there).
fn parquet_fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/parquet/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

async fn store_with_bytes(objects: &[(&str, Vec<u8>)]) -> Arc<dyn ObjectStore> {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    for (key, body) in objects {
        store
            .put(&Path::from(*key), body.clone().into())
            .await
            .unwrap();
    }
    store
}

/// `wrapped.parquet`: six rows in three row groups of two, Label Studio's
/// wrapper as a `data` struct with `annotations` and `predictions`; row 4
/// has annotations but no data.
#[tokio::test]
async fn parquet_rows_become_tasks_with_their_row_group_and_row() {
    let store = store_with_bytes(&[("wrapped.parquet", parquet_fixture("wrapped.parquet"))]).await;
    let sink = Fixture::new();
    let outcome = sink.import_tasks(&store, &small_batches()).await.unwrap();
    assert_eq!(outcome.progress.created, 5);
    assert_eq!(outcome.bad_tasks, 1);
    assert_eq!(outcome.file_errors.len(), 1, "{:?}", outcome.file_errors);
    assert!(
        outcome.file_errors[0].starts_with("wrapped.parquet: row 4: "),
        "{:?}",
        outcome.file_errors
    );
    let rows: Vec<_> = sink
        .db
        .links(sink.storage)
        .into_iter()
        .map(|l| (l.link.row_group, l.link.row_index))
        .collect();
    assert_eq!(
        rows,
        [(0, 0), (0, 1), (1, 2), (1, 3), (2, 5)].map(|(g, r)| (Some(g), Some(r)))
    );
    let tasks = sink.db.tasks(sink.project);
    assert_eq!(
        Value::from(tasks[0].data.clone()),
        json!({"text": "text 0", "score": 0.0})
    );
    assert_eq!(tasks[0].annotations.len(), 1);
    assert_eq!(
        tasks[0].annotations[0]["result"][0]["value"],
        json!({"choices": ["yes"]})
    );
    assert_eq!(tasks[1].predictions[0]["score"], 0.5);
    assert!(tasks[2].annotations.is_empty() && tasks[2].predictions.is_empty());

    let again = sink.import_tasks(&store, &small_batches()).await.unwrap();
    assert_eq!((again.progress.created, again.progress.existed), (0, 5));
}

#[tokio::test]
async fn parquet_files_of_every_codec_pyarrow_writes_are_read_with_their_types() {
    let codecs = ["none", "snappy", "gzip", "zstd", "brotli", "lz4"];
    let files: Vec<_> = codecs
        .iter()
        .map(|codec| {
            let name = format!("bare-{codec}.parquet");
            (name.clone(), parquet_fixture(&name))
        })
        .collect();
    let objects: Vec<(&str, Vec<u8>)> =
        files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let store = store_with_bytes(&objects).await;
    let sink = Fixture::new();
    let outcome = sink.import_tasks(&store, &small_batches()).await.unwrap();
    assert!(outcome.file_errors.is_empty(), "{:?}", outcome.file_errors);
    assert_eq!(outcome.progress.created, 3 * codecs.len() as u64);
    let expected = [
        json!({"text": "a", "id": 1, "ratio": 0.5, "captured": "2024-05-01T12:30:00Z",
               "day": "2024-05-01", "tags": ["x", "y"], "attrs": {"k": 1}, "blob": "AAE="}),
        json!({"text": null, "id": 2, "ratio": null, "captured": "2024-05-01T12:30:00Z",
               "day": "2024-05-01", "tags": [], "attrs": {}, "blob": ""}),
        json!({"text": "c", "id": 3, "ratio": 1.5, "captured": "2024-05-01T12:30:00Z",
               "day": "2024-05-01", "tags": null, "attrs": {"a": 2, "b": 3}, "blob": null}),
    ];
    for (i, task) in sink.db.tasks(sink.project).iter().enumerate() {
        assert_eq!(
            Value::from(task.data.clone()),
            expected[i % 3],
            "{} row {}",
            files[i / 3].0,
            i % 3
        );
    }
}

#[tokio::test]
async fn parquet_columns_of_json_text_are_read_as_json() {
    let store = store_with_bytes(&[("j.parquet", parquet_fixture("json-text.parquet"))]).await;
    let sink = Fixture::new();
    let outcome = sink.import_tasks(&store, &small_batches()).await.unwrap();
    assert!(outcome.file_errors.is_empty(), "{:?}", outcome.file_errors);
    let tasks = sink.db.tasks(sink.project);
    assert_eq!(Value::from(tasks[0].data.clone()), json!({"text": "a"}));
    assert_eq!(tasks[0].annotations.len(), 1);
    assert_eq!(Value::from(tasks[1].data.clone()), json!({"text": "b"}));
}

/// `wrapped.parquet` with the bytes of row group `index` overwritten.
async fn with_damaged_row_group(index: usize) -> Vec<u8> {
    let mut bytes = parquet_fixture("wrapped.parquet");
    let store = store_with_bytes(&[("f.parquet", bytes.clone())]).await;
    let size = bytes.len() as u64;
    let metadata =
        storage_core::parquet_file::read_metadata(&*store, &Path::from("f.parquet"), size, "f")
            .await
            .unwrap();
    let groups = storage_core::parquet_file::row_groups("f", &metadata, size).unwrap();
    let range = &groups[index].bytes;
    bytes[range.start as usize..range.end as usize].fill(0xff);
    bytes
}

#[tokio::test]
async fn a_broken_parquet_file_is_reported_and_the_other_files_imported() {
    let whole = parquet_fixture("wrapped.parquet");
    let store = store_with_bytes(&[
        (
            "a-not-parquet.parquet",
            b"{\"text\": \"json in disguise\"}".to_vec(),
        ),
        ("b-cut.parquet", whole[..whole.len() - 10].to_vec()),
        ("c-damaged.parquet", with_damaged_row_group(1).await),
        ("d.json", br#"{"text": "fine"}"#.to_vec()),
        (
            "e-huge-footer.parquet",
            [&b"PAR1"[..], &[0; 64], &u32::MAX.to_le_bytes(), b"PAR1"].concat(),
        ),
    ])
    .await;
    let sink = Fixture::new();
    let outcome = sink.import_tasks(&store, &small_batches()).await.unwrap();
    let errors = outcome.file_errors.join("\n");
    assert!(
        errors
            .contains("e-huge-footer.parquet: its footer claims 4294967295 bytes, above the limit"),
        "{errors}"
    );
    assert!(
        errors.contains("a-not-parquet.parquet: not a Parquet file"),
        "{errors}"
    );
    assert!(
        errors.contains("b-cut.parquet: not a Parquet file"),
        "{errors}"
    );
    assert!(
        errors.contains("c-damaged.parquet: row group 1 cannot be read"),
        "{errors}"
    );
    assert_eq!(outcome.progress.failed_files, 4);
    let keys = sink.keys();
    assert!(keys.contains(&("d.json".into(), None)));
    assert_eq!(
        keys.iter()
            .filter(|(k, _)| k == "c-damaged.parquet")
            .count(),
        2,
        "the rows of the row group before the damage: {keys:?}"
    );
}

#[tokio::test]
async fn a_parquet_row_group_above_the_limit_is_reported_not_read() {
    let store = store_with_bytes(&[("w.parquet", parquet_fixture("wrapped.parquet"))]).await;
    let sink = Fixture::new();
    let config = ImportConfig {
        max_row_group_bytes: 100,
        ..small_batches()
    };
    let outcome = sink.import_tasks(&store, &config).await.unwrap();
    assert_eq!(outcome.progress.created, 0);
    assert_eq!(outcome.file_errors.len(), 1, "{:?}", outcome.file_errors);
    assert!(
        outcome.file_errors[0].starts_with("w.parquet: row group 0 is ")
            && outcome.file_errors[0].contains("above the limit of 100 bytes"),
        "{:?}",
        outcome.file_errors
    );
}

#[tokio::test]
async fn a_crash_inside_a_parquet_file_resumes_at_the_first_row_group_not_wholly_linked() {
    let location = Path::from("w.parquet");
    let store = store_with_bytes(&[("w.parquet", parquet_fixture("wrapped.parquet"))]).await;
    let src = source(&store, None, false, None);
    let crashing = Fixture::new();
    crashing.db.fail_create_tasks_call(Some(2));
    let err = crashing
        .import(&src, false, &small_batches(), &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("simulated crash"), "{err}");
    assert_eq!(crashing.db.task_count(), 2, "row group 0");
    assert_eq!(crashing.db.unfinished(crashing.storage), vec!["w.parquet"]);

    // Row group 0 is damaged now: read again, it would be reported.
    store
        .put(&location, with_damaged_row_group(0).await.into())
        .await
        .unwrap();
    let healed = crashing;
    healed.db.fail_create_tasks_call(None);
    let outcome = healed
        .import(&src, false, &small_batches(), &NoProgress)
        .await
        .unwrap();
    assert_eq!((outcome.progress.created, outcome.progress.existed), (3, 2));
    assert_eq!(
        outcome.file_errors.len(),
        1,
        "row 4 only: {:?}",
        outcome.file_errors
    );
    let rows: Vec<_> = healed.keys().into_iter().map(|(_, r)| r.unwrap()).collect();
    assert_eq!(rows, [0, 1, 2, 3, 5], "every row once");
    assert!(healed.db.unfinished(healed.storage).is_empty());
}

/// Hostile input: `wrapped.parquet` with bytes changed at random places
/// (footer included). Each file is reported or imported; no mutation may
/// fail the sync or panic it.
#[tokio::test]
async fn damaged_parquet_files_never_fail_the_sync() {
    let whole = parquet_fixture("wrapped.parquet");
    // xorshift: the same mutations on every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut objects = Vec::new();
    for case in 0..300 {
        let mut bytes = whole.clone();
        for _ in 0..1 + next() % 4 {
            // Half the changes land in the footer's last 600 bytes.
            let at = if next() % 2 == 0 {
                bytes.len() - 1 - (next() as usize % 600)
            } else {
                next() as usize % bytes.len()
            };
            bytes[at] = next() as u8;
        }
        objects.push((format!("m{case:03}.parquet"), bytes));
    }
    let objects: Vec<(&str, Vec<u8>)> = objects
        .iter()
        .map(|(k, b)| (k.as_str(), b.clone()))
        .collect();
    let store = store_with_bytes(&objects).await;
    let sink = Fixture::new();
    let outcome = sink.import_tasks(&store, &small_batches()).await.unwrap();
    assert_eq!(outcome.progress.objects, 300);
    assert!(
        outcome.progress.failed_files > 0,
        "some mutations must break files"
    );
}

// Syncs that follow the bucket (`on_object_changed`, `on_object_deleted`,
// the deletion guard).

fn following(
    changed: ObjectChanged,
    deleted: ObjectDeleted,
    confirm_deletions: bool,
) -> FollowPolicy {
    FollowPolicy {
        changed,
        deleted,
        confirm_deletions,
        ..FollowPolicy::default()
    }
}

impl Fixture {
    async fn follow(
        &self,
        src: &dyn ImportStorage,
        use_blob_urls: bool,
        follow: FollowPolicy,
    ) -> ImportOutcome {
        self.import_following(src, use_blob_urls, follow, &small_batches(), &NoProgress)
            .await
            .unwrap()
    }

    fn annotate(&self, key: &str) {
        let (task, _) = self.task_of(key).unwrap();
        self.db.add_annotation(task.id, json!([]), None).unwrap();
    }

    fn exists(&self, key: &str) -> Vec<bool> {
        self.db
            .links(self.storage)
            .into_iter()
            .filter(|l| l.link.key == key)
            .map(|l| l.object_exists)
            .collect()
    }
}

/// Counts of one outcome: (created, updated, deleted, marked, missing).
fn follow_counts(outcome: &ImportOutcome) -> (u64, u64, u64, u64, u64) {
    let p = &outcome.progress;
    (p.created, p.updated, p.deleted, p.marked, p.missing)
}

#[tokio::test]
async fn files_mode_follows_changed_deleted_and_new_objects() {
    let store = numbered_images("f", 20).await;
    let src = source(&store, Some("f"), false, None);
    let fixture = Fixture::new();
    let policy = following(ObjectChanged::Update, ObjectDeleted::Delete, false);
    assert_eq!(
        fixture.follow(&src, true, policy).await.progress.created,
        20
    );
    fixture.annotate("f/001.jpg");
    let (_, before) = fixture.task_of("f/005.jpg").unwrap();

    for gone in ["f/000.jpg", "f/001.jpg", "f/002.jpg"] {
        store.delete(&Path::from(gone)).await.unwrap();
    }
    for new in ["f/020.jpg", "f/021.jpg"] {
        store.put(&Path::from(new), "x".into()).await.unwrap();
    }
    store
        .put(&Path::from("f/005.jpg"), "changed".into())
        .await
        .unwrap();

    let outcome = fixture.follow(&src, true, policy).await;
    assert!(outcome.file_errors.is_empty(), "{:?}", outcome.file_errors);
    assert_eq!(follow_counts(&outcome), (2, 0, 2, 1, 3));
    assert_eq!(outcome.progress.changed, 1);
    assert!(fixture.task_of("f/000.jpg").is_none());
    assert_eq!(
        fixture.exists("f/001.jpg"),
        vec![false],
        "annotated: marked, kept"
    );
    let (_, after) = fixture.task_of("f/005.jpg").unwrap();
    assert_eq!(after.size, Some(7));
    assert_ne!(after.etag, before.etag);
    assert_eq!(fixture.db.task_count(), 20);

    // Converged: nothing changes on the next sync.
    let again = fixture.follow(&src, true, policy).await;
    assert_eq!(follow_counts(&again), (0, 0, 0, 0, 0));
    assert_eq!(again.progress.changed, 0);
}

#[tokio::test]
async fn keep_policies_leave_changed_and_deleted_objects_alone() {
    let store = numbered_images("f", 6).await;
    let src = source(&store, Some("f"), false, None);
    let fixture = Fixture::new();
    fixture.follow(&src, true, FollowPolicy::default()).await;
    store.delete(&Path::from("f/000.jpg")).await.unwrap();
    store
        .put(&Path::from("f/001.jpg"), "changed".into())
        .await
        .unwrap();
    let outcome = fixture.follow(&src, true, FollowPolicy::default()).await;
    assert_eq!(follow_counts(&outcome), (0, 0, 0, 0, 0));
    assert_eq!(outcome.progress.existed, 5);
    assert_eq!(fixture.exists("f/000.jpg"), vec![true]);
    assert_eq!(fixture.task_of("f/001.jpg").unwrap().1.size, Some(1));
}

#[tokio::test]
async fn mark_marks_gone_objects_once() {
    let store = numbered_images("f", 10).await;
    let src = source(&store, Some("f"), false, None);
    let fixture = Fixture::new();
    let policy = following(ObjectChanged::Keep, ObjectDeleted::Mark, false);
    fixture.follow(&src, true, policy).await;
    store.delete(&Path::from("f/003.jpg")).await.unwrap();
    let outcome = fixture.follow(&src, true, policy).await;
    assert_eq!(follow_counts(&outcome), (0, 0, 0, 1, 1));
    assert_eq!(fixture.exists("f/003.jpg"), vec![false]);
    assert_eq!(fixture.db.task_count(), 10);
    let again = fixture.follow(&src, true, policy).await;
    assert_eq!(
        follow_counts(&again),
        (0, 0, 0, 0, 0),
        "marked once, not missing again"
    );
}

#[tokio::test]
async fn the_guard_holds_back_a_large_share_until_confirmed() {
    let store = numbered_images("f", 10).await;
    let src = source(&store, Some("f"), false, None);
    let fixture = Fixture::new();
    let policy = following(ObjectChanged::Keep, ObjectDeleted::Delete, false);
    fixture.follow(&src, true, policy).await;
    for i in 0..5 {
        store
            .delete(&Path::from(format!("f/{i:03}.jpg")))
            .await
            .unwrap();
    }
    let held = fixture.follow(&src, true, policy).await;
    assert_eq!(follow_counts(&held), (0, 0, 0, 0, 5));
    assert_eq!(held.file_errors.len(), 1);
    assert!(
        held.file_errors[0].contains("5 of 10 linked objects (50.0%)")
            && held.file_errors[0].contains("deletion_guard of 20%")
            && held.file_errors[0].contains("confirm_deletions"),
        "{}",
        held.file_errors[0]
    );
    assert_eq!(fixture.db.task_count(), 10);

    let confirmed = following(ObjectChanged::Keep, ObjectDeleted::Delete, true);
    let applied = fixture.follow(&src, true, confirmed).await;
    assert_eq!(follow_counts(&applied), (0, 0, 5, 0, 5));
    assert!(applied.file_errors.is_empty());
    assert_eq!(fixture.db.task_count(), 5);
}

#[tokio::test]
async fn an_empty_listing_removes_nothing_and_changing_the_prefix_is_not_a_deletion() {
    let store = numbered_images("f", 4).await;
    let fixture = Fixture::new();
    let policy = following(ObjectChanged::Keep, ObjectDeleted::Delete, false);
    fixture
        .follow(&source(&store, Some("f"), false, None), true, policy)
        .await;

    // Another prefix: the objects linked under "f" are not its concern.
    let other = fixture
        .follow(&source(&store, Some("g"), false, None), true, policy)
        .await;
    assert_eq!(follow_counts(&other), (0, 0, 0, 0, 0));

    for i in 0..4 {
        store
            .delete(&Path::from(format!("f/{i:03}.jpg")))
            .await
            .unwrap();
    }
    let guard = FollowPolicy {
        guard_percent: 100,
        ..policy
    };
    let empty = fixture
        .follow(&source(&store, Some("f"), false, None), true, guard)
        .await;
    assert_eq!(follow_counts(&empty), (0, 0, 0, 0, 4));
    assert!(
        empty.file_errors[0].contains("the listing returned no object while 4 objects are linked"),
        "{:?}",
        empty.file_errors
    );
    assert_eq!(fixture.db.task_count(), 4);
}

/// A source whose listing fails after `fail_after` objects, or lists in
/// reverse order.
#[derive(Debug)]
struct OddListing {
    inner: Source,
    fail_after: Option<usize>,
}

#[async_trait]
impl ImportStorage for OddListing {
    fn store(&self) -> Arc<dyn ObjectStore> {
        self.inner.store()
    }
    fn listing(&self) -> &Listing {
        self.inner.listing()
    }
    fn list(&self) -> futures::stream::BoxStream<'static, Result<object_store::ObjectMeta>> {
        use futures::StreamExt;
        let fail_after = self.fail_after;
        let listing = self.inner.listing().list(self.store());
        futures::stream::once(async move {
            let mut objects: Vec<_> = listing.collect().await;
            match fail_after {
                Some(n) => {
                    objects.truncate(n);
                    objects.push(Err(Error::backend("listing", "connection reset by peer")));
                }
                None => objects.reverse(),
            }
            futures::stream::iter(objects)
        })
        .flatten()
        .boxed()
    }
    fn object_key(&self, location: &Path) -> String {
        self.inner.object_key(location)
    }
    fn task_url(&self, location: &Path) -> String {
        self.inner.task_url(location)
    }
}

#[tokio::test]
async fn a_listing_that_fails_midway_removes_nothing() {
    let store = numbered_images("f", 10).await;
    let fixture = Fixture::new();
    let policy = following(ObjectChanged::Update, ObjectDeleted::Delete, true);
    fixture
        .follow(&source(&store, Some("f"), false, None), true, policy)
        .await;
    let cut = OddListing {
        inner: source(&store, Some("f"), false, None),
        fail_after: Some(3),
    };
    let err = fixture
        .import_following(&cut, true, policy, &small_batches(), &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    assert_eq!(fixture.db.task_count(), 10);
    assert!(fixture
        .db
        .links(fixture.storage)
        .iter()
        .all(|l| l.object_exists));
}

#[tokio::test]
async fn an_unsorted_listing_finds_exactly_the_gone_objects() {
    let store = numbered_images("f", 12).await;
    let fixture = Fixture::new();
    let policy = following(ObjectChanged::Keep, ObjectDeleted::Delete, false);
    let reversed = OddListing {
        inner: source(&store, Some("f"), false, None),
        fail_after: None,
    };
    fixture.follow(&reversed, true, policy).await;
    for gone in ["f/000.jpg", "f/007.jpg"] {
        store.delete(&Path::from(gone)).await.unwrap();
    }
    let outcome = fixture.follow(&reversed, true, policy).await;
    assert_eq!(follow_counts(&outcome), (0, 0, 2, 0, 2));
    assert!(fixture.task_of("f/000.jpg").is_none() && fixture.task_of("f/007.jpg").is_none());
    assert_eq!(fixture.db.task_count(), 10);
}

#[tokio::test]
async fn a_changed_task_file_updates_unannotated_tasks_and_marks_annotated_ones() {
    let rows = |values: &[&str]| {
        let tasks: Vec<Value> = values.iter().map(|v| json!({ "text": v })).collect();
        serde_json::to_string(&tasks).unwrap()
    };
    let store = store_with(&[("tasks.json", &rows(&["a", "b", "c", "d"]))]).await;
    let fixture = Fixture::new();
    let policy = following(ObjectChanged::Update, ObjectDeleted::Delete, false);
    let src = source(&store, None, false, None);
    assert_eq!(
        fixture.follow(&src, false, policy).await.progress.created,
        4
    );
    let tasks = fixture.db.tasks(fixture.project);
    fixture
        .db
        .add_annotation(tasks[1].id, json!([]), None)
        .unwrap();
    fixture
        .db
        .add_annotation(tasks[3].id, json!([]), None)
        .unwrap();

    // Row 0 changes, row 1 (annotated) changes, row 2 stays, row 3
    // (annotated) is gone.
    store
        .put(&Path::from("tasks.json"), rows(&["A", "B", "c"]).into())
        .await
        .unwrap();
    let outcome = fixture.follow(&src, false, policy).await;
    assert!(outcome.file_errors.is_empty(), "{:?}", outcome.file_errors);
    // Row 0 updated; row 1 marked (kept "b"); row 3 gone but annotated:
    // marked, not deleted.
    assert_eq!(follow_counts(&outcome), (0, 1, 0, 2, 0));
    let data: Vec<Value> = fixture
        .db
        .tasks(fixture.project)
        .iter()
        .map(|t| t.data["text"].clone())
        .collect();
    assert_eq!(data, vec![json!("A"), json!("b"), json!("c"), json!("d")]);

    // Rows added, an unannotated row gone.
    store
        .put(&Path::from("tasks.json"), rows(&["A", "B"]).into())
        .await
        .unwrap();
    let shrunk = fixture.follow(&src, false, policy).await;
    assert_eq!(follow_counts(&shrunk), (0, 0, 1, 0, 0), "row 2 deleted");
    store
        .put(
            &Path::from("tasks.json"),
            rows(&["A", "B", "x", "y", "z"]).into(),
        )
        .await
        .unwrap();
    let grown = fixture.follow(&src, false, policy).await;
    // Row 2 is new again; row 3 is linked (annotated "d", marked) and
    // differs, already marked; row 4 is new.
    assert_eq!(follow_counts(&grown), (2, 0, 0, 0, 0));
    let again = fixture.follow(&src, false, policy).await;
    assert_eq!(follow_counts(&again), (0, 0, 0, 0, 0));
}

/// A source whose listing yields its objects, then never ends (an
/// endpoint that stopped answering).
#[derive(Debug)]
struct StalledListing(Source);

#[async_trait]
impl ImportStorage for StalledListing {
    fn store(&self) -> Arc<dyn ObjectStore> {
        self.0.store()
    }
    fn listing(&self) -> &Listing {
        self.0.listing()
    }
    fn list(&self) -> futures::stream::BoxStream<'static, Result<object_store::ObjectMeta>> {
        use futures::StreamExt;
        self.0
            .listing()
            .list(self.store())
            .chain(futures::stream::pending())
            .boxed()
    }
    fn object_key(&self, location: &Path) -> String {
        self.0.object_key(location)
    }
    fn task_url(&self, location: &Path) -> String {
        self.0.task_url(location)
    }
}

#[tokio::test]
async fn a_failed_write_ends_the_sync_at_once_while_the_listing_waits() {
    let store = numbered_images("f", 4).await;
    let fixture = Fixture::new();
    fixture.db.fail_create_tasks_call(Some(1));
    let stalled = StalledListing(source(&store, Some("f"), false, None));
    // The listing would hold the sync for its stall timeout (120 s).
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        fixture.import(&stalled, true, &small_batches(), &NoProgress),
    )
    .await
    .expect("the failed write did not end the sync")
    .unwrap_err();
    assert!(err.to_string().contains("simulated crash"), "{err}");
    assert_eq!(fixture.db.task_count(), 0);
}
